"""Types of match answers and the fine-ranker protocol. The record types lower layers share too
(`Hit`, `PATHS`, `FeatureProvider`) live in `assetmatch.types` and are re-exported here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from assetmatch.matching.fine import FineCalibration
from assetmatch.models import TableAsset
from assetmatch.types import PATHS, FeatureProvider, Hit, Siblings


@dataclass
class RankedTable:
    """One table in a match answer."""

    asset_id: str
    business: str
    name: str
    score: float  # final score (fine if a fine ranker ran, else coarse)
    coarse_score: float
    fine_score: float | None = None
    path_scores: dict[str, float] = field(default_factory=dict)  # path -> raw score
    path_ranks: dict[str, int] = field(default_factory=dict)  # path -> rank
    reasons: list[str] = field(default_factory=list)  # short human-readable reasons
    selected: bool = False


@dataclass
class MatchResult:
    """Ranked list and selected set for one requirement."""

    business: str
    requirement: str
    ranked: list[RankedTable]
    selected: list[str]  # asset ids, in rank order
    index_version: str = ""
    model_version: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> ms
    fine_depth: int = 0  # tables the fine ranker scored (0: the coarse ranking answered)
    fine_skipped: str = ""  # why the business's adapter did not run, when it has one (the cascade)
    coarse_model: str = ""
    """Which coarse model answered, i.e. how much to trust it: "fusion" (untrained reciprocal-rank
    fusion), "synthetic" (fitted on requirements synthesized from metadata only), "labelled" or
    "blended" (labelled requirements plus synthetic ones)."""
    degraded: bool = False  # the cascade asked for the fine ranker but it was too busy: coarse answer


class FineRankerBusy(RuntimeError):
    """Raised by a `FineRanker` that cannot score in time (overloaded queue, client deadline): the
    Matcher then answers from the coarse ranking and marks the answer `degraded`."""


@runtime_checkable
class FineRanker(Protocol):
    """Scores (requirement, table) pairs with the business's adapter (implemented in assetmatch.ranking).

    The Matcher asks for raw logits and applies the business's calibration (cascade, fusion with
    the coarse scores, set selection: `assetmatch.matching.fine`) itself, so every caller of the
    fine stage — training evaluation, the A/B gate, the CLI, serving — answers the same way."""

    def logits(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[float]:
        """One raw relevance logit per asset, higher is better (`assets` in coarse order); `examples`:
        asset id -> the most similar past request that used it; `siblings`: asset id -> the names of
        the other tables of its database (each shown to adapters trained with them). May raise
        `FineRankerBusy` to have the coarse ranking answer."""
        ...

    def version(self, business: str) -> str:
        """Which model version scores this business ('' when none: coarse-only)."""
        ...

    def calibration(self, business: str) -> FineCalibration:
        """The business's `FineCalibration` (defaults when it has none)."""
        ...


__all__ = ["PATHS", "FeatureProvider", "FineRanker", "FineRankerBusy", "Hit", "MatchResult", "RankedTable"]
