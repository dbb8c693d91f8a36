"""The `build-indexes` flow on prefect-dask's DaskTaskRunner (a real LocalCluster of two processes):
the build task runs on a Dask worker and its embedding fans out on the same cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from assetmatch.config import load_settings
from assetmatch.lake import Lake
from assetmatch.models import Column, TableAsset

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "flows"))


def test_flow_on_dask_task_runner_embeds_like_in_process(tmp_path: Path, prefect_harness: None) -> None:
    import build_indexes as flow_module
    from assetmatch.recall.encoder import EncoderSpec, encode, load_encoder
    from assetmatch.recall.index import IndexSet

    config = tmp_path / "assetmatch.yaml"
    recall = {"index_root": str(tmp_path / "idx"), "dask_min_tables": 0, "dask_chunk_size": 2}
    config.write_text(yaml.safe_dump({"lake": {"uri": str(tmp_path / "lake")}, "recall": recall}))
    settings = load_settings(config)
    assets = [
        TableAsset(business="shop", name=f"t{i}", comment=comment, columns=[Column(name="id")])
        for i, comment in enumerate(["orders", "customers", "顾客城市", "refunds", "daily revenue"])
    ]
    Lake.from_settings(settings).merge_assets(assets, run_id="t")

    manifest = flow_module.on_dask(workers=2)(config_path=str(config))
    assert manifest["counts"]["embedded_assets"] == 5

    index = IndexSet.load_latest(settings.recall.index_root)
    from assetmatch.recall.documents import table_document

    expected = encode(load_encoder(EncoderSpec()), [table_document(index.assets[a]) for a in index.asset_ids])
    got = np.vstack([index.dense.vectors[i] for i in range(len(index.asset_ids))])  # type: ignore[union-attr]
    np.testing.assert_allclose(got, expected, atol=1e-5)
