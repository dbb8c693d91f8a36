"""Training data of one business: labelled requirements and (requirement, table, label) pairs.

Labelled requirements come from three lake tables: `requirements` (split train only: test and
dev are never trained or tuned on), `query_log` entries that carry the analyst's requirement
text (the tables the query read are the answer), and `feedback` rows (the tables the caller
really used). Negatives are mostly *hard*: the recall candidates for the requirement that are
not gold, i.e. the confusable twins the ranker must learn to reject; a few random library
tables keep the scores calibrated against easy negatives. Everything is seeded.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from assetmatch.lake import tables as T
from assetmatch.models import TableAsset, scope_of
from assetmatch.text import same_query_key, same_request_key

Candidates = Callable[[str, str, int, tuple[str, ...] | None], list[str]]
"""candidates(business, requirement_text, k, databases) -> asset ids, best first (a recall / coarse
path); `databases`: the scope the requirement was asked in, None for the whole library."""

Origin = Literal["requirements", "query_log", "feedback", "synthetic"]


@dataclass(frozen=True)
class LabelledRequirement:
    """A requirement text and the tables that answer it."""

    id: str
    business: str
    text: str
    gold: tuple[str, ...]
    origin: Origin = "requirements"
    query: str = ""  # the query and tables that answered it (`text.same_query_key`), "" when unknown
    databases: tuple[str, ...] | None = None  # the scope it was asked in (`Requirement.databases`)


@dataclass(frozen=True)
class Pair:
    """One training pair for the cross-encoder."""

    requirement_id: str
    text: str
    asset_id: str
    label: float
    kind: Literal["positive", "hard", "random"]
    prior: float = 0.0  # added to the pair's logit in the loss (`RankerConfig.coarse_offset`)


@dataclass
class TrainingData:
    """The labelled requirements of one business, split into train and validation, with provenance."""

    business: str
    train: list[LabelledRequirement]
    validation: list[LabelledRequirement]
    synthetic: list[LabelledRequirement] = field(default_factory=list)
    lake_versions: dict[str, int | None] = field(default_factory=dict)
    fingerprint: str = ""

    def counts(self) -> dict[str, int]:
        out = {"train": len(self.train), "validation": len(self.validation), "synthetic": len(self.synthetic)}
        for origin in ("requirements", "query_log", "feedback"):
            out[f"train_{origin}"] = sum(1 for r in self.train if r.origin == origin)
        return out


def in_holdout(requirement_id: str, fraction: float, salt: str = "assetmatch-holdout-v1") -> bool:
    """Stable hash split: the same requirement is always on the same side, across runs and models."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{requirement_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_holdout(
    items: Sequence[LabelledRequirement], fraction: float
) -> tuple[list[LabelledRequirement], list[LabelledRequirement]]:
    """(train, validation) by `in_holdout`. Copies of one text stay on one side, and so do the
    paraphrases answered by one query over the same tables (keyed by the query where it is known,
    else by the text): a validation requirement whose twin was trained on would judge the adapter
    on what it memorised."""
    train: list[LabelledRequirement] = []
    validation: list[LabelledRequirement] = []
    for item in items:
        key = item.query or same_request_key(item.text)
        (validation if in_holdout(key, fraction) else train).append(item)
    return train, validation


def labelled_from_lake(lake: Any, business: str, known_assets: set[str]) -> list[LabelledRequirement]:
    """Labelled train requirements of `business` from requirements + query_log + feedback.

    Gold ids not in the business's live library are dropped (a table since deleted cannot be
    learned); a requirement left with no gold is skipped. Duplicate texts keep the first label.
    """

    out: list[LabelledRequirement] = []
    for req in lake.read_requirements(business=business, split="train"):
        out.append(
            LabelledRequirement(
                req.id,
                business,
                req.text,
                tuple(req.gold_assets),
                "requirements",
                same_query_key(req.sql, req.gold_assets),
                scope_of(req.databases),
            )
        )
    for entry in lake.read_query_log(business=business):
        if entry.requirement and entry.tables:
            out.append(
                LabelledRequirement(
                    f"q:{entry.query_id}",
                    business,
                    entry.requirement,
                    tuple(entry.tables),
                    "query_log",
                    same_query_key(entry.sql, entry.tables),
                )
            )
    for row in lake.read_arrow(T.FEEDBACK).to_pylist():
        if row["business"] == business and row["requirement"] and row["used_assets"]:
            out.append(
                LabelledRequirement(
                    f"f:{row['request_id']}",
                    business,
                    row["requirement"],
                    tuple(row["used_assets"]),
                    "feedback",
                    databases=scope_of(row.get("databases")),
                )
            )
    return dedupe(replace(r, gold=tuple(a for a in r.gold if a in known_assets)) for r in out)


def dedupe(items: Iterable[LabelledRequirement]) -> list[LabelledRequirement]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = same_request_key(item.text)
        if not item.gold or not key or key in seen:
            continue
        seen.add(key)
        out.append(item)
    return out


def build_pairs(
    requirements: Sequence[LabelledRequirement],
    library: Sequence[str],
    candidates: Candidates | None,
    hard_negatives: int,
    random_negatives: int,
    candidate_k: int,
    seed: int,
) -> list[Pair]:
    """Positive pairs for every gold table, plus hard (recall) and random negatives, shuffled.

    Hard negatives are the top non-gold recall candidates, in recall order: the tables most
    easily confused with the answer. When the recall finds fewer, random negatives fill up.
    """
    rng = random.Random(seed)
    pool = sorted(set(library))
    pairs: list[Pair] = []
    for req in requirements:
        gold = set(req.gold)
        pairs.extend(Pair(req.id, req.text, a, 1.0, "positive") for a in req.gold)
        hard: list[str] = []
        if candidates is not None and hard_negatives:
            for asset_id in candidates(req.business, req.text, candidate_k, req.databases):
                if asset_id not in gold and asset_id not in hard:
                    hard.append(asset_id)
                if len(hard) == hard_negatives:
                    break
        pairs.extend(Pair(req.id, req.text, a, 0.0, "hard") for a in hard)
        taken = gold | set(hard)
        wanted = random_negatives + (hard_negatives - len(hard))
        others = [a for a in pool if a not in taken]
        for a in rng.sample(others, min(wanted, len(others))):
            pairs.append(Pair(req.id, req.text, a, 0.0, "random"))
    rng.shuffle(pairs)
    return pairs


def fingerprint(requirements: Iterable[LabelledRequirement], assets: Iterable[TableAsset]) -> str:
    """sha256 over the labelled data and the library's content: equal means nothing to retrain."""
    h = hashlib.sha256()
    for r in sorted(requirements, key=lambda r: (r.id, r.text)):
        # the scope only where there is one: unscoped data keeps the fingerprint it had before scopes
        scope = [list(r.databases)] if r.databases else []
        h.update(
            json.dumps([r.id, r.text, sorted(r.gold), r.query, *scope], ensure_ascii=False).encode("utf-8")
        )
    for a in sorted(assets, key=lambda a: a.asset_id):
        h.update(a.asset_id.encode("utf-8"))
        h.update(a.content_hash().encode("utf-8"))
    return h.hexdigest()
