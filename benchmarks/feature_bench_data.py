"""Synthetic lakes for the feature benchmarks: N tables over a few businesses and a skewed query log."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import Column, QueryLogEntry, TableAsset


def synthetic_lake(
    uri: str, n_assets: int, n_queries: int, days: int, seed: int = 7
) -> tuple[Lake, list[str]]:
    """Write `n_assets` tables (5 businesses, 3-30 columns) and `n_queries` queries over the last `days`
    days (Zipf-like table popularity, 1-4 tables per query). Returns the lake and the asset ids."""
    rng = random.Random(seed)
    lake = Lake(uri)
    businesses = [f"biz{i}" for i in range(5)]
    assets = []
    for i in range(n_assets):
        cols = [
            Column(name=f"c{j}", comment="described" if rng.random() < 0.6 else "")
            for j in range(rng.randint(3, 30))
        ]
        assets.append(TableAsset(business=businesses[i % 5], database="dw", name=f"t{i}", columns=cols))
    for start in range(0, n_assets, 20_000):
        lake.merge_assets(assets[start : start + 20_000], run_id=f"bench-{start}")
    ids = [a.asset_id for a in assets]
    now = datetime.now(UTC)
    # cumulative weights once: with `weights=` every draw re-sums all n_assets weights (quadratic)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(n_assets)))
    rows = []
    for q in range(n_queries):
        picked = rng.choices(ids, cum_weights=cum_weights, k=rng.randint(1, 4))
        entry = QueryLogEntry(
            query_id=f"q{q}",
            ts=now - timedelta(seconds=rng.uniform(0, days * 86_400)),
            user=f"u{rng.randint(0, 200)}",
            business=picked[0].split(".", 1)[0],
            sql="select 1",
            tables=picked,
        )
        rows.append({**entry.model_dump(), "run_id": "bench"})
    lake.upsert(T.QUERY_LOG, rows, "bench")
    return lake, ids
