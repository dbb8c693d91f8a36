"""Feast features for ranking: frames computed from the lake (build), the Feast store built from the
settings (store), and the FeatureProvider the Matcher reads (provider). Feast is imported lazily."""

from __future__ import annotations

from pathlib import Path

from assetmatch.config import Settings
from assetmatch.features.provider import FeastFeatureProvider
from assetmatch.types import FeatureProvider

JOURNAL_FILE = "materializations.jsonl"
"""File under `feast.data_dir` where `store.materialize` appends one JSON line per run (lake versions
read, snapshots written). Defined here, without Feast, so the nightly pipeline can read it cheaply."""


def journal_path(settings: Settings) -> Path:
    """The materialization journal of these settings (it exists once features were materialized)."""
    return Path(settings.feast.data_dir) / JOURNAL_FILE


def provider_for_training(settings: Settings) -> FeatureProvider | None:
    """The Feast provider the coarse model is fitted with: None when features are disabled or were
    never materialized (a first run fits without them; the next fit, after materialization, uses
    them). The model records its feature list, so matching knows whether it needs the provider."""
    if not settings.feast.enabled or not journal_path(settings).exists():
        return None

    return FeastFeatureProvider(settings)
