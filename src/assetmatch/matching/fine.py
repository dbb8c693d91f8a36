"""What the Matcher does with a fine ranker's logits: the cascade, the fusion, the set.

A LoRA adapter (assetmatch.ranking) gives one logit per (requirement, table). Three small fitted
parts, stored beside the adapter in `calibration.json` and applied identically by training
evaluation, the A/B gate, the Matcher and the serving layer, turn those logits into an answer:

1. **Cascade** (`Cascade.depth`): fine-rank only when the coarse answer is uncertain — the
   gap between the last table the coarse selection keeps and the first it drops is below a
   fitted margin — and only the coarse top `depth` tables. The adapter is never asked about a
   list that holds a table of a database it did not learn (`familiar`: the tables it would rank and
   every table the coarse selection keeps): there its scores are noise, and the coarse ranking
   answers instead.
2. **Fusion** (`Fusion.probs`): a logistic regression over the logit, its margin to the best
   logit of the list, the coarse rank, the coarse score and its margin to the best coarse score.
   A confident adapter takes over; an unsure one falls back towards the coarse order.
3. **Selection** (`FineCalibration.selector`): fine scores decide the set, in one of two ways the
   calibration chooses between on the business's validation requirements: the set-selection rules
   (`matching.selection`) with parameters calibrated on the fused probabilities, or the coarse
   stage's learned set model (`matching.set_model`, fitted on thousands of out-of-fold lists)
   reading the fused probabilities in place of the coarse ones (`set_model`), with those rules' set
   as one of its features. Calibration also chooses whether the fused scores decide the set
   everywhere, or only where they change the top table (`keep_coarse_set`: where the adapter keeps
   the coarse ranking's best table, the coarse selection's set stands — fitted on every labelled
   requirement's list, where a selection on fused scores has a few dozen validation lists).

Everything here is numpy and the standard library: no model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assetmatch.matching.selection import RequestTerms, ScoredTable, SelectionParams, SetSelector
from assetmatch.matching.set_model import LearnedSetSelector

CALIBRATION_FILE = "calibration.json"
FUSION_FEATURES = ("logit", "logit_margin", "log_coarse_rank", "coarse_score", "coarse_margin")


@dataclass
class Fusion:
    """p = sigmoid(w . x + bias), x = `FUSION_FEATURES` of each candidate of one list.

    Candidates are scored as a list in coarse order (rank 0 = the coarse ranker's best). Fitted by
    logistic regression on validation candidates (`fit`); the identity (weights 1, 0, ...) is the
    adapter's own sigmoid. Weights stored by an older version (3 features, no coarse score) are
    padded with zeros, so they mean what they meant.

    An adapter that learned on top of the coarse ranking (`RankerConfig.coarse_offset`) was trained
    to score logit + `coarse_offset` x the coarse log-odds; that sum is its "logit" here, as in
    training.
    """

    weights: list[float] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0, 0.0])
    bias: float = 0.0
    coarse_offset: float = 0.0

    def __post_init__(self) -> None:
        n = len(FUSION_FEATURES)
        if len(self.weights) > n:
            raise ValueError(f"Fusion has {len(self.weights)} weights; at most {n} ({FUSION_FEATURES})")
        self.weights = [float(w) for w in self.weights] + [0.0] * (n - len(self.weights))

    @staticmethod
    def features(
        logits: Sequence[float], coarse: Sequence[float] | None = None, coarse_offset: float = 0.0
    ) -> np.ndarray:
        x = np.asarray(logits, dtype=float)
        if x.size == 0:
            return np.zeros((0, len(FUSION_FEATURES)))
        c = np.zeros_like(x) if coarse is None else np.asarray(coarse, dtype=float)[: x.size]
        if c.size != x.size:
            raise ValueError(f"Fusion: {x.size} logits but {c.size} coarse scores")
        if coarse is not None and coarse_offset:
            x = x + coarse_offset * log_odds(c)
        return np.column_stack([x, x - x.max(), np.log1p(np.arange(x.size)), c, c - c.max()])

    def probs(self, logits: Sequence[float], coarse: Sequence[float] | None = None) -> list[float]:
        z = self.features(logits, coarse, self.coarse_offset) @ np.asarray(self.weights) + self.bias
        return [float(v) for v in 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))]

    @classmethod
    def fit(
        cls,
        lists: Sequence[tuple[Sequence[float], Sequence[float] | None, Sequence[bool]]],
        coarse_offset: float = 0.0,
    ) -> Fusion:
        """Logistic regression over every (candidate, is-gold) of the validation lists."""
        from sklearn.linear_model import LogisticRegression

        kept = [item for item in lists if len(item[0])]
        if not kept:
            return cls(coarse_offset=coarse_offset)
        x = np.vstack([cls.features(logits, coarse, coarse_offset) for logits, coarse, _ in kept])
        y = np.concatenate([np.asarray(gold, dtype=int) for _, _, gold in kept])
        if len(set(y.tolist())) < 2:  # one class only: nothing to learn, keep the adapter's sigmoid
            return cls(coarse_offset=coarse_offset)
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        return cls([float(w) for w in model.coef_[0]], float(model.intercept_[0]), coarse_offset)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Fusion:
        return cls(**data) if data else cls()


def log_odds(scores: Sequence[float] | np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """log(p / (1 - p)) of coarse scores, clipped to [eps, 1 - eps] (BM25-scaled scores reach 1)."""
    p = np.clip(np.asarray(scores, dtype=float), eps, 1 - eps)
    return np.log(p / (1 - p))


def coarse_margin(coarse: Sequence[float], n_selected: int) -> float:
    """How clearly the coarse scores separate the selected tables from the rest: the score of the
    last selected table minus that of the first one left out (inf when nothing is left out)."""
    if n_selected <= 0 or len(coarse) <= n_selected:
        return float("inf")
    return float(coarse[n_selected - 1] - coarse[n_selected])


_NOT_BETTER = "did not beat the coarse ranking on validation by more than its noise"  # why a cascade is never


@dataclass
class Cascade:
    """When to fine-rank, and how deep (see the module docstring).

    max_margin: fine-rank only when `coarse_margin` is below it (None: always).
    depth: fine-rank the coarse top `depth` tables (0: the Matcher's `fine_top_n`).
    familiar_only: skip the adapter when any table it would rank, or any table the coarse selection
        keeps, is not `familiar` (a table of a database it learned: `training.train.familiar_tables`):
        its scores are compared across the list, and one noise score among them can take the top.
        Calibration always sets it (`training.evaluate.cascade_rules`); False answers every list.
    familiar_ranked: check every table it would rank (True), or only the top one and the kept ones
        (False: the rule of calibrations saved without this key, whose `familiar` lists gold tables
        only; `from_dict` reads them with it, so an adapter is served as it was gated).
    """

    max_margin: float | None = None
    depth: int = 0
    familiar_only: bool = True
    familiar_ranked: bool = True

    @classmethod
    def never(cls) -> Cascade:
        """Never fine-rank: every margin is >= 0 (coarse scores are sorted), so none is below 0."""
        return cls(max_margin=0.0)

    @classmethod
    def always(cls) -> Cascade:
        """Fine-rank every requirement, familiar or not, as deep as the caller allows."""
        return cls(None, 0, False)

    def depth_for(
        self,
        ids: Sequence[str],
        coarse: Sequence[float],
        selected: Sequence[str],
        familiar: Collection[str] | None,
        cap: int,
    ) -> int:
        """How many of the coarse-ordered `ids` to fine-rank (0: answer with the coarse ranking).
        `selected`: the set the coarse selection keeps."""
        if not ids:
            return 0
        if self.max_margin is not None and coarse_margin(coarse, len(selected)) >= self.max_margin:
            return 0
        depth = min(len(ids), cap, self.depth or cap)
        checked = [*ids[:depth], *selected] if self.familiar_ranked else [ids[0], *selected]
        if self.familiar_only and familiar is not None and any(a not in familiar for a in checked):
            return 0
        return depth

    @property
    def is_never(self) -> bool:
        """Never asks: no coarse margin is below 0, whatever the other fields say (a calibration saved
        before `familiar_ranked` reads back with it False, and is still never)."""
        return self.max_margin == 0.0

    def describe(self) -> str:
        """When this cascade asks the adapter, in the words the train step and `assetmatch train` print."""
        if self.is_never:
            return f"cascade: never asked (it {_NOT_BETTER})"
        deep = f"the coarse top {self.depth}" if self.depth else "the coarse top fine_top_n"
        lists = "every list of learned tables" if self.familiar_only else "every list"
        if self.max_margin is None:
            return f"cascade: asked on {lists}, {deep}"
        return f"cascade: asked on {lists} whose coarse margin is below {self.max_margin:.2f}, {deep}"

    def why_skipped(self) -> str:
        """What a match result says when this cascade kept the coarse answer."""
        if self.is_never:
            return f"cascade: this adapter {_NOT_BETTER}"
        if self.max_margin is None:  # no margin test: only the familiar check defers
            return "cascade: its list holds a table of a database the adapter did not learn"
        return (
            "cascade: the coarse answer is certain, "
            "or its list holds a table of a database the adapter did not learn"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Cascade:
        return cls(**{"familiar_ranked": False, **data}) if data else cls()


@dataclass
class FineCalibration:
    """Everything calibration.json holds for one adapter (threshold None: never calibrated)."""

    threshold: float | None = None
    fusion: Fusion = field(default_factory=Fusion)
    selection: SelectionParams | None = None
    cascade: Cascade = field(default_factory=Cascade)
    familiar: frozenset[str] | None = None  # tables of the databases it learned (None: unknown)
    extra: dict[str, Any] = field(default_factory=dict)
    # select with the coarse stage's set model over fused probabilities (else: the calibrated rules)
    set_model: bool = False
    # the coarse selection's set stands unless the fine ranking changes the top table
    keep_coarse_set: bool = False

    def keeps_coarse_set(self, coarse_ids: Sequence[str], fine_ids: Sequence[str]) -> bool:
        """Whether the answer is the coarse selection's set although the list was fine-ranked: with
        `keep_coarse_set`, when the fine ranking's top table is the coarse ranking's."""
        return self.keep_coarse_set and same_top(coarse_ids, fine_ids)

    def selector(self, fallback: SetSelector) -> SetSelector:
        """Selection over fused probabilities, `fallback` being the coarse stage's selector: its set
        model reading the calibrated rules' set (`set_model`, when `fallback` has one — a coarse model
        refitted without one leaves the rules), else the calibrated rules, else `fallback`'s rules
        with the calibrated threshold (adapters calibrated before selection was)."""
        if self.set_model and isinstance(fallback, LearnedSetSelector):
            return LearnedSetSelector(self.selection or fallback.params, fallback.model)
        if self.selection is not None:
            return SetSelector(self.selection)
        return fallback.with_threshold(self.threshold) if self.threshold is not None else fallback

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "fusion": asdict(self.fusion),
            "selection": self.selection.model_dump() if self.selection is not None else None,
            "cascade": asdict(self.cascade),
            "familiar": sorted(self.familiar) if self.familiar is not None else None,
            "set_model": self.set_model,
            "keep_coarse_set": self.keep_coarse_set,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineCalibration:
        known = {"threshold", "fusion", "selection", "cascade", "familiar", "set_model", "keep_coarse_set"}
        threshold = data.get("threshold")
        selection = data.get("selection")
        familiar = data.get("familiar")
        return cls(
            None if threshold is None else float(threshold),
            Fusion.from_dict(data.get("fusion")),
            SelectionParams.model_validate(selection) if selection else None,
            Cascade.from_dict(data.get("cascade")),
            frozenset(familiar) if familiar is not None else None,
            {k: v for k, v in data.items() if k not in known},
            bool(data.get("set_model", False)),
            bool(data.get("keep_coarse_set", False)),  # calibrations saved before it: the fine set always
        )


def same_top(coarse_ids: Sequence[str], fine_ids: Sequence[str]) -> bool:
    """Whether the fine ranking kept the coarse ranking's top table."""
    return bool(coarse_ids) and bool(fine_ids) and coarse_ids[0] == fine_ids[0]


def write_calibration(folder: str | Path, calibration: FineCalibration) -> Path:
    path = Path(folder) / CALIBRATION_FILE
    path.write_text(json.dumps(calibration.to_dict(), indent=1, sort_keys=True), encoding="utf-8")
    return path


def read_calibration(folder: str | Path) -> FineCalibration:
    """The adapter's calibration; a missing file means an uncalibrated adapter (defaults).
    A file that is not valid raises ValueError naming it (a reload must fail, not guess)."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.exists():
        return FineCalibration()
    try:
        return FineCalibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid calibration file: {exc}") from exc


@dataclass
class CoarseAnswer:
    """The coarse stage's answer to one requirement: candidates best first, their coarse scores, and
    the set the coarse selection picks (what the product answers when the fine stage is skipped)."""

    ids: list[str]
    scores: list[float]
    selected: list[str]
    examples: dict[str, str] = field(default_factory=dict)  # asset id -> nearest past request using it
    terms: RequestTerms = field(default_factory=RequestTerms)  # the request's terms in each table


@dataclass
class FineList:
    """One requirement's answer after the fine stage (or without it, when the cascade skipped it)."""

    ids: list[str]  # best first
    scores: list[float]  # what selection reads: fused probabilities (0.0 below the fine depth)
    fine: dict[str, float]  # fused probability of each fine-ranked table
    depth: int  # tables fine-ranked (0: coarse answer)


def rerank(ids: Sequence[str], coarse: Sequence[float], logits: Sequence[float], fusion: Fusion) -> FineList:
    """The coarse top len(logits) re-sorted by fused probability (ties keep coarse order); the
    tables below keep their coarse order with selection score 0 (they were not judged)."""
    depth = len(logits)
    probs = fusion.probs(logits, coarse[:depth])
    order = sorted(range(depth), key=lambda i: -probs[i])
    head = [ids[i] for i in order]
    return FineList(
        head + list(ids[depth:]),
        [probs[i] for i in order] + [0.0] * (len(ids) - depth),
        {ids[i]: probs[i] for i in range(depth)},
        depth,
    )


def scored_tables(
    ids: Sequence[str],
    scores: Sequence[float],
    group_of: Any,
    terms: RequestTerms | None = None,
) -> list[ScoredTable]:
    """What selection reads: each table's score, group and the request's terms in it
    (`FeatureBuilder.request_terms`)."""
    terms = terms or RequestTerms()
    return [ScoredTable(a, float(s), group_of(a), *terms.of(a)) for a, s in zip(ids, scores)]
