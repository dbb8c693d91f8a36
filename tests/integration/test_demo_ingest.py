"""The demo end to end through ingestion: generated files -> real sources -> GX validation -> Delta lake."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from assetmatch.demo import catalog
from assetmatch.demo.intents import intents_for
from assetmatch.demo.pipeline import DemoContext, run_steps
from assetmatch.demo.warehouse import REQUIREMENTS_PER_INTENT, glossary_terms
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.text import normalize_text

pytestmark = pytest.mark.integration

REFERENCE = date(2026, 3, 1)


def test_demo_generate_and_ingest_counts_per_business(tmp_path: Path) -> None:
    ctx = DemoContext(dir=tmp_path / "demo", reference_date=REFERENCE, console=Console(quiet=True))
    results = run_steps(ctx, only=["generate", "ingest"], show_progress=False)
    assert [r.name for r in results] == ["generate", "ingest"]
    paths = ctx.paths
    assert paths is not None
    summary = ctx.results["ingest_summary"]
    assert summary.ok, [s.error for s in summary.failed]

    lake = Lake(paths.lake)
    assert lake.read_arrow(T.QUARANTINE).num_rows == 0  # nothing quarantined
    for game in paths.businesses:
        spec = catalog.game(game)
        assets = lake.read_assets(businesses=[game])
        assert {a.name for a in assets} == set(spec.table_names())
        active = next(a for a in assets if a.name == "dws_user_active_1d")
        assert active.comment == normalize_text(spec.table("dws_user_active_1d").comment)  # comments survived
        assert {fk.ref_asset_id for fk in active.foreign_keys} >= {
            f"{game}.dw.dim_user",
            f"{game}.dw.dim_channel",
        }

        with paths.query_logs[game].open(encoding="utf-8", newline="") as handle:
            logged = list(csv.DictReader(handle))
        queries = lake.read_query_log(business=game)
        assert len(queries) == len(logged)
        known = {a.asset_id for a in assets}
        assert all(q.tables and set(q.tables) <= known for q in queries)

        requirements = lake.read_requirements(business=game)
        splits = Counter(r.split for r in requirements)
        assert sum(splits.values()) == len(intents_for(game)) * REQUIREMENTS_PER_INTENT
        assert set(splits) == {"train", "test"}
        assert all(set(r.gold_assets) <= known and r.ts is not None for r in requirements)

        glossary = lake.read_glossary(business=game)
        assert len(glossary) == len(glossary_terms(spec))
