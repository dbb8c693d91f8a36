"""Record types shared across layers (recall, features, matching, serving), at the bottom so any
layer can use them. Dependency-free on purpose; `assetmatch.matching.types` re-exports them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, get_args, runtime_checkable

RecallPathName = Literal["lexical", "dense", "glossary", "usage", "graph"]
"""The recall paths, named once: the config accepts these, the index runs the query paths registered
under them (`assetmatch.recall.paths`), "graph" expands the others' seeds, and the coarse model has one
block of features per name, in this order."""
PATHS: tuple[RecallPathName, ...] = get_args(RecallPathName)

SelectionObjective = Literal["f1_exact", "f1"]
"""What set-selection calibration maximises (`matching.selection`; the config's
`matching.selection_objective`). The first is the default."""
SELECTION_OBJECTIVES: tuple[SelectionObjective, ...] = get_args(SelectionObjective)

Siblings = Mapping[str, Sequence[str] | None]
"""asset id -> the names of the other tables of its database, what a fine ranker trained with the
database context reads beside the table; None: its business holds one database, no context shown
(`matching.fusion.FeatureBuilder.siblings`)."""


@dataclass
class Hit:
    """One candidate found by one recall path."""

    asset_id: str
    score: float
    rank: int  # 1-based within its path
    path: str
    matched: list[str] = field(default_factory=list)  # matched terms / the reason, for explanations
    example: str = ""  # usage path: the most similar past request that used this table
    # usage path: the highest cosine between the request and a past request that used this table and
    # voted (0 where none is above the path's floor): how close the nearest twin is, which the rank
    # fusion of the votes does not say
    nearest: float = 0.0
    # usage path: the same in words — the highest share of words (Jaccard of the BM25 tokens) the
    # request has in common with such a past request; it tells twins apart where the encoder's
    # cosine does not (MiniLM reads most Chinese characters as unknown)
    nearest_words: float = 0.0


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
