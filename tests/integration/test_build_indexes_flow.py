"""The `build-indexes` Prefect flow on a tiny lake: a real flow run, a published index, an artifact."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from assetmatch.config import load_settings
from assetmatch.lake import Lake
from assetmatch.models import Column, ForeignKey, TableAsset

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "flows"))


def _assets() -> list[TableAsset]:
    return [
        TableAsset(business="shop", name="orders", columns=[Column(name="order_id"), Column(name="customer_id")],
                   foreign_keys=[ForeignKey(columns=["customer_id"], ref_asset_id="shop.customers")]),
        TableAsset(business="shop", name="customers", comment="顾客", columns=[Column(name="customer_id"), Column(name="city")]),
    ]  # fmt: skip


def test_flow_builds_publishes_and_reports(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client

    import build_indexes as flow_module
    from assetmatch.recall.index import IndexSet

    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {"lake": {"uri": str(tmp_path / "lake")}, "recall": {"index_root": str(tmp_path / "idx")}}
        )
    )
    settings = load_settings(config)
    Lake.from_settings(settings).merge_assets(_assets(), run_id="t")

    manifest: dict[str, Any] = flow_module.build_indexes(config_path=str(config))
    assert manifest["counts"]["assets"] == 2 and manifest["counts"]["embedded_assets"] == 2
    index = IndexSet.load_latest(settings.recall.index_root)
    assert index.id == manifest["id"]
    assert index.recall("customers by city", ["shop"])["lexical"][0].asset_id == "shop.customers"

    async def artifact_markdowns() -> list[str]:
        async with get_client() as client:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["index-manifest"]))
            )
            return [str(a.data) for a in found]

    import asyncio

    # this run's artifact, whatever other flow runs of the session wrote before it
    mine = [m for m in asyncio.run(artifact_markdowns()) if manifest["id"] in m]
    assert len(mine) == 1 and "embedded_assets" in mine[0]

    again = flow_module.build_indexes(config_path=str(config))
    assert again["counts"]["embedded_assets"] == 0 and again["counts"]["reused_assets"] == 2
