"""`LoraFineRanker`: the Matcher's FineRanker over one base model and one LoRA adapter per business.

It turns each (requirement, table) into a compressed document (`ranking.prompt`) that fits the
token budget, scores all pairs with `MultiAdapterScorer` (one forward pass per micro-batch, even
when the rows belong to different businesses), and returns probabilities, so that the
per-business threshold calibrated at training time applies directly.

The probability is not the adapter's logit alone: `Fusion` (fitted on the business's validation
requirements, stored in calibration.json) combines the logit with the table's coarse rank and
its margin to the best logit of the list. A young adapter that is unsure falls back towards the
coarse order instead of overriding it; a confident one takes over.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assetmatch.models import TableAsset
from assetmatch.ranking.model import MultiAdapterScorer, ScoreRow
from assetmatch.ranking.prompt import table_prompt, tokenizer_counter

CALIBRATION_FILE = "calibration.json"


@dataclass
class Fusion:
    """p = sigmoid(w . [logit, logit - max logit of the list, log(1 + coarse rank)] + bias).

    Candidates are scored as a list in coarse order (rank 0 = the coarse ranker's best), so the
    coarse evidence travels with them. Fitted by logistic regression on validation candidates
    (`fit`); the identity (weights 1, 0, 0) is the adapter's own sigmoid.
    """

    weights: list[float] = field(default_factory=lambda: [1.0, 0.0, 0.0])
    bias: float = 0.0

    @staticmethod
    def features(logits: Sequence[float]) -> np.ndarray:
        x = np.asarray(logits, dtype=float)
        if x.size == 0:
            return np.zeros((0, 3))
        return np.column_stack([x, x - x.max(), np.log1p(np.arange(x.size))])

    def probs(self, logits: Sequence[float]) -> list[float]:
        z = self.features(logits) @ np.asarray(self.weights) + self.bias
        return [float(v) for v in 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))]

    @classmethod
    def fit(cls, lists: Sequence[tuple[Sequence[float], Sequence[bool]]]) -> Fusion:
        """Logistic regression over every (candidate, is-gold) of the validation lists."""
        from sklearn.linear_model import LogisticRegression

        kept = [(logits, gold) for logits, gold in lists if len(logits)]
        if not kept:
            return cls()
        x = np.vstack([cls.features(logits) for logits, _ in kept])
        y = np.concatenate([np.asarray(gold, dtype=int) for _, gold in kept])
        if len(set(y.tolist())) < 2:  # one class only: nothing to learn, keep the adapter's sigmoid
            return cls()
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        return cls([float(w) for w in model.coef_[0]], float(model.intercept_[0]))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Fusion:
        return cls(**data) if data else cls()


def write_calibration(
    folder: str | Path, threshold: float, fusion: Fusion | None = None, **extra: Any
) -> None:
    """Store the business's set-selection threshold (and score fusion) next to its adapter."""
    data = {"threshold": float(threshold), "fusion": asdict(fusion or Fusion()), **extra}
    (Path(folder) / CALIBRATION_FILE).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


@dataclass
class Calibration:
    """What calibration.json holds for one adapter (threshold None: never calibrated)."""

    threshold: float | None = None
    fusion: Fusion = field(default_factory=Fusion)


def read_calibration(folder: str | Path) -> Calibration:
    path = Path(folder) / CALIBRATION_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    threshold = data.get("threshold")
    return Calibration(None if threshold is None else float(threshold), Fusion.from_dict(data.get("fusion")))


class LoraFineRanker:
    """FineRanker (assetmatch.matching.types) backed by per-business LoRA adapters on a shared base."""

    def __init__(self, scorer: MultiAdapterScorer) -> None:
        self.scorer = scorer
        self._versions: dict[str, str] = {}
        self._thresholds: dict[str, float] = {}
        self._fusions: dict[str, Fusion] = {}
        self._count = tokenizer_counter(scorer.tokenizer)

    # ---- adapters --------------------------------------------------------------------------
    def add(self, business: str, path: str | Path, version: str, threshold: float | None = None) -> None:
        """Load `business`'s adapter from a folder; threshold from its calibration.json unless given."""
        self.scorer.load_adapter(business, path)
        self._versions[business] = version
        calibration = read_calibration(path)
        self._fusions[business] = calibration.fusion
        chosen = threshold if threshold is not None else calibration.threshold
        if chosen is not None:
            self._thresholds[business] = float(chosen)

    def remove(self, business: str) -> None:
        self.scorer.unload_adapter(business)
        self._versions.pop(business, None)
        self._thresholds.pop(business, None)
        self._fusions.pop(business, None)

    def businesses(self) -> list[str]:
        return sorted(self._versions)

    def version(self, business: str) -> str:
        """The model version scoring `business` ('' when it has no adapter: coarse-only)."""
        return self._versions.get(business, "")

    def threshold(self, business: str) -> float | None:
        """Calibrated probability threshold for set selection (None when not calibrated)."""
        return self._thresholds.get(business)

    # ---- scoring ---------------------------------------------------------------------------
    def documents(self, requirement: str, assets: Sequence[TableAsset]) -> list[str]:
        """Compressed table documents that fit next to this requirement in the token budget."""
        budget = max(8, self.scorer.max_length - self._count(requirement) - 3)
        return [table_prompt(requirement, a, budget, self._count) for a in assets]

    def rows(self, business: str, requirement: str, assets: Sequence[TableAsset]) -> list[ScoreRow]:
        if business not in self._versions:
            raise KeyError(f"no fine-ranking adapter for business {business!r} (loaded: {self.businesses()})")
        return [ScoreRow(business, requirement, d) for d in self.documents(requirement, assets)]

    def logits(self, business: str, requirement: str, assets: Sequence[TableAsset]) -> list[float]:
        return self.scorer.score_rows(self.rows(business, requirement, assets))

    def fusion(self, business: str) -> Fusion:
        return self._fusions.get(business) or Fusion()

    def score(self, business: str, requirement: str, assets: Sequence[TableAsset]) -> list[float]:
        """One probability per asset (higher = more relevant); `assets` in coarse order, best first."""
        return self.fusion(business).probs(self.logits(business, requirement, assets))

    def score_many(self, items: Sequence[tuple[str, str, Sequence[TableAsset]]]) -> list[list[float]]:
        """Several (business, requirement, assets) at once: all rows go through one mixed batch.
        Each asset list is in coarse order, as for `score`."""
        rows: list[ScoreRow] = []
        sizes = []
        for business, requirement, assets in items:
            part = self.rows(business, requirement, assets)
            rows.extend(part)
            sizes.append(len(part))
        flat = self.scorer.score_rows(rows)
        out, start = [], 0
        for (business, _, _), n in zip(items, sizes):
            out.append(self.fusion(business).probs(flat[start : start + n]))
            start += n
        return out

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_folders(
        cls,
        adapters: Mapping[str, tuple[str | Path, str]],
        base: str,
        device: str = "auto",
        max_length: int = 128,
        batch_size: int = 64,
        mixed: bool = True,
    ) -> LoraFineRanker:
        """business -> (adapter folder, version label)."""
        ranker = cls(MultiAdapterScorer(base, device, max_length, batch_size, mixed))
        for business, (path, version) in adapters.items():
            ranker.add(business, path, version)
        return ranker

    @classmethod
    def from_registry(
        cls,
        settings: Any,
        businesses: Sequence[str] | None = None,
        alias: str = "champion",
        cache_dir: str | Path | None = None,
        mixed: bool = True,
    ) -> LoraFineRanker:
        """Load every business's `alias` version from the MLflow registry (businesses without one are skipped)."""
        from assetmatch.registry.mlflow import Registry

        registry = Registry.from_settings(settings)
        ranker = cls(
            MultiAdapterScorer(
                settings.model.base,
                settings.model.device,
                settings.model.max_length,
                settings.serving.max_batch_size,
                mixed,
            )
        )
        root = Path(cache_dir or Path(settings.training.adapters_dir) / "registry-cache")
        for business in businesses or settings.business_names():
            mv = registry.version_by_alias(business, alias)
            if mv is None:
                continue
            folder = registry.download_adapter(business, str(mv.version), root / business / str(mv.version))
            ranker.add(business, folder, f"{registry.model_name(business)}/{mv.version}")
        return ranker
