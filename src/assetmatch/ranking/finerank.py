"""`LoraFineRanker`: the Matcher's FineRanker over one base model and one LoRA adapter per business.

It turns each (requirement, table) into a compressed document (`ranking.prompt`) that fits the
token budget and scores all pairs with `MultiAdapterScorer` (one forward pass per micro-batch,
even when the rows belong to different businesses). It gives the Matcher raw logits and each
business's `FineCalibration` (calibration.json beside the adapter): the cascade, the fusion of
logits with the coarse scores, and the set-selection rules, all applied in
`assetmatch.matching.fine` — the same code for training evaluation, the A/B gate and serving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from assetmatch.config import Settings
from assetmatch.matching.fine import (
    CALIBRATION_FILE,
    FineCalibration,
    Fusion,
    read_calibration,
    write_calibration,
)
from assetmatch.models import TableAsset
from assetmatch.ranking.config import CONFIG_FILE, RankerConfig
from assetmatch.ranking.model import MultiAdapterScorer, ScoreRow
from assetmatch.ranking.prompt import document_budget, table_prompt, tokenizer_counter
from assetmatch.types import Siblings

__all__ = [
    "CALIBRATION_FILE",
    "FineCalibration",
    "Fusion",
    "LoraFineRanker",
    "read_calibration",
    "write_calibration",
]


@dataclass(frozen=True)
class DocumentShows:
    """What an adapter was trained to read in a table's document besides the table itself: it is
    served the same way (`RankerConfig.past_requests`, `RankerConfig.database_context`)."""

    past_requests: bool = False
    database: bool = False

    def shown(
        self, examples: Mapping[str, str] | None, siblings: Siblings | None
    ) -> tuple[Mapping[str, str] | None, Siblings | None]:
        """The (examples, siblings) to render documents with: only what the adapter was trained on.
        An adapter trained with its database but asked without siblings still reads the name."""
        return (
            examples if self.past_requests else None,
            (siblings or {}) if self.database else None,
        )


def document_shows(adapter_dir: str | Path) -> DocumentShows:
    """What the adapter in `adapter_dir` reads beside a table. Adapters saved before a setting
    existed (no such field in their ranker config, or no config) were trained without it."""
    path = Path(adapter_dir) / CONFIG_FILE
    if not path.exists():
        return DocumentShows()
    saved = json.loads(path.read_text(encoding="utf-8"))
    config = RankerConfig.from_dict(saved)
    return DocumentShows(
        past_requests=bool(saved.get("past_requests", False)) and config.past_requests,
        database=bool(saved.get("database_context", False)) and config.database_context,
    )


class LoraFineRanker:
    """FineRanker (assetmatch.matching.types) backed by per-business LoRA adapters on a shared base."""

    def __init__(self, scorer: MultiAdapterScorer) -> None:
        self.scorer = scorer
        self._versions: dict[str, str] = {}
        self._thresholds: dict[str, float] = {}
        self._calibrations: dict[str, FineCalibration] = {}
        self._shows: dict[str, DocumentShows] = {}
        self._count = tokenizer_counter(scorer.tokenizer)

    @classmethod
    def from_settings(cls, settings: Settings, mixed: bool = False) -> LoraFineRanker:
        """An empty ranker on the base, device, token budget and quantization of `settings.ranker`,
        batching up to `serving.max_batch_size` pairs (`mixed`: one pass across adapters, not one
        per adapter)."""
        ranker = settings.ranker
        return cls(
            MultiAdapterScorer(
                ranker.base,
                ranker.device,
                ranker.max_length,
                settings.serving.max_batch_size,
                mixed,
                quantize=ranker.quantize,
            )
        )

    # ---- adapters --------------------------------------------------------------------------
    def add(self, business: str, path: str | Path, version: str, threshold: float | None = None) -> None:
        """Load `business`'s adapter from a folder; threshold from its calibration.json unless given."""
        calibration = read_calibration(path)  # first: a bad file must not leave the adapter loaded
        self.scorer.load_adapter(business, path)
        self._versions[business] = version
        self._calibrations[business] = calibration
        self._shows[business] = document_shows(path)
        chosen = threshold if threshold is not None else calibration.threshold
        if chosen is not None:
            self._thresholds[business] = float(chosen)

    def remove(self, business: str) -> None:
        self.scorer.unload_adapter(business)
        self._versions.pop(business, None)
        self._thresholds.pop(business, None)
        self._calibrations.pop(business, None)
        self._shows.pop(business, None)

    def businesses(self) -> list[str]:
        return sorted(self._versions)

    def version(self, business: str) -> str:
        """The model version scoring `business` ('' when it has no adapter: coarse-only)."""
        return self._versions.get(business, "")

    def threshold(self, business: str) -> float | None:
        """Calibrated probability threshold for set selection (None when not calibrated)."""
        return self._thresholds.get(business)

    # ---- scoring ---------------------------------------------------------------------------
    def documents(
        self,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[str]:
        """Compressed table documents that fit next to this requirement in the token budget, each
        with its past request from `examples` (asset id -> text) when given, and its database
        context when `siblings` (asset id -> the other tables of its database) is given."""
        budget = document_budget(requirement, self.scorer.max_length, self._count)
        examples = examples or {}
        return [
            table_prompt(
                requirement,
                a,
                budget,
                self._count,
                examples.get(a.asset_id, ""),
                None if siblings is None else siblings.get(a.asset_id, ()),
            )
            for a in assets
        ]

    def rows(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[ScoreRow]:
        if business not in self._versions:
            raise KeyError(f"no fine-ranking adapter for business {business!r} (loaded: {self.businesses()})")
        docs = self.documents(requirement, assets, *self._shows[business].shown(examples, siblings))
        return [ScoreRow(business, requirement, d) for d in docs]

    def logits(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[float]:
        return self.scorer.score_rows(self.rows(business, requirement, assets, examples, siblings))

    def calibration(self, business: str) -> FineCalibration:
        """The business's cascade, fusion and selection (defaults when it has none)."""
        return self._calibrations.get(business) or FineCalibration()

    def fusion(self, business: str) -> Fusion:
        return self.calibration(business).fusion

    def score(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        coarse: Sequence[float] | None = None,
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[float]:
        """One fused probability per asset (higher = more relevant); `assets` in coarse order, best
        first, with their coarse scores when known."""
        return self.fusion(business).probs(
            self.logits(business, requirement, assets, examples, siblings), coarse
        )

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_folders(
        cls,
        adapters: Mapping[str, tuple[str | Path, str]],
        base: str,
        device: str = "auto",
        max_length: int = 128,
        batch_size: int = 64,
        mixed: bool = False,
        quantize: str = "none",
    ) -> LoraFineRanker:
        """business -> (adapter folder, version label)."""
        ranker = cls(MultiAdapterScorer(base, device, max_length, batch_size, mixed, quantize=quantize))
        for business, (path, version) in adapters.items():
            ranker.add(business, path, version)
        return ranker
