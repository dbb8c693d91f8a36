"""Offline sources: the daily feature snapshots that `assetmatch features materialize` writes as Delta.

Paths are relative: Feast resolves them against the repo path of its config, which is this folder for
the `feast` CLI and the lake folder when assetmatch builds the store (assetmatch.features.store).
"""

from feast import FileSource
from feast.data_format import DeltaFormat

OWNER = "ranking@assetmatch"

asset_features_source = FileSource(
    name="asset_features_source",
    path="features/asset_features",
    file_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_at",
    description="Daily per-table snapshots computed from the lake's assets, query_log and feedback tables; "
    "a snapshot at midnight T only uses events before T.",
    owner=OWNER,
    tags={"format": "delta", "built_by": "assetmatch.features.build"},
)

asset_pair_features_source = FileSource(
    name="asset_pair_features_source",
    path="features/asset_pair_features",
    file_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_at",
    description="Daily per-(table, table) co-usage snapshots computed from the lake's query_log; "
    "only pairs queried together at least once appear.",
    owner=OWNER,
    tags={"format": "delta", "built_by": "assetmatch.features.build"},
)
