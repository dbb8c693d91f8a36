"""Feast features reach the coarse ranker: after materialization the demo's coarse model is fitted
with the stored features (read point-in-time) and matching reads them online through Feast."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from assetmatch.demo.pipeline import DemoContext, run_steps
from assetmatch.features import provider_for_training
from assetmatch.features.provider import FeastFeatureProvider
from assetmatch.matching.fusion import STORED_FEATURE_PREFIX
from assetmatch.matching.matcher import Matcher

pytestmark = pytest.mark.integration


def test_coarse_model_is_fitted_and_served_with_feast_features(tmp_path: Path) -> None:
    ctx = DemoContext(dir=tmp_path / "demo", reference_date=date(2026, 3, 1), console=Console(quiet=True))
    run_steps(ctx, only=["generate", "ingest"], show_progress=False)
    assert provider_for_training(ctx.settings) is None  # nothing materialized yet: fit without features

    run_steps(ctx, only=["features", "index"], show_progress=False)
    assert isinstance(provider_for_training(ctx.settings), FeastFeatureProvider)
    matcher = Matcher.from_settings(ctx.settings)
    stored = [n for n in matcher.builder.feature_names if n.startswith(STORED_FEATURE_PREFIX)]
    assert "fp_queries_30d" in stored and "fp_deprecated" in stored
    assert isinstance(matcher.feature_provider, FeastFeatureProvider)  # attached because the model needs it

    result = matcher.match("card", "每日活跃用户数 按渠道")
    assert result.ranked and result.selected
    disabled = ctx.settings.model_copy(
        update={"feast": ctx.settings.feast.model_copy(update={"enabled": False})}
    )
    assert provider_for_training(disabled) is None
