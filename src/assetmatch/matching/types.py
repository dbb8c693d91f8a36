"""Types shared by recall, ranking, features and serving. Kept dependency-free on purpose."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from assetmatch.models import TableAsset

if TYPE_CHECKING:
    from assetmatch.matching.fine import FineCalibration

PATHS = ("lexical", "dense", "glossary", "usage", "graph")


@dataclass
class Hit:
    """One candidate found by one recall path."""

    asset_id: str
    score: float
    rank: int  # 1-based within its path
    path: str
    matched: list[str] = field(default_factory=list)  # matched terms / the reason, for explanations


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


@runtime_checkable
class FeatureProvider(Protocol):
    """Per-asset numeric features for coarse ranking (implemented over Feast in assetmatch.features).

    Missing assets or an unreachable store give default values, never an exception.
    """

    feature_names: list[str]

    def online(self, asset_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Latest feature values for each asset id (one batched call)."""
        ...

    def historical(self, rows: Sequence[tuple[str, datetime]]) -> list[dict[str, float]]:
        """Point-in-time values for (asset_id, as_of) rows: nothing later than as_of leaks in."""
        ...


@runtime_checkable
class FineRanker(Protocol):
    """Scores (requirement, table) pairs with the business's adapter (implemented in assetmatch.ranking).

    The Matcher asks for raw logits and applies the business's calibration (cascade, fusion with
    the coarse scores, set selection: `assetmatch.matching.fine`) itself, so every caller of the
    fine stage — training evaluation, the A/B gate, the CLI, serving — answers the same way."""

    def logits(self, business: str, requirement: str, assets: Sequence[TableAsset]) -> list[float]:
        """One raw relevance logit per asset, higher is better (`assets` in coarse order)."""
        ...

    def version(self, business: str) -> str:
        """Which model version scores this business ('' when none: coarse-only)."""
        ...

    def calibration(self, business: str) -> FineCalibration:
        """The business's `FineCalibration` (defaults when it has none)."""
        ...
