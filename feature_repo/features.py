"""Feature views. Field names must match the columns of assetmatch.features.build (a unit test checks)."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float32, Int64

from data_sources import asset_features_source, asset_pair_features_source
from entities import asset, asset_pair

OWNER = "ranking@assetmatch"
# Snapshots are daily: a week of TTL tolerates a few missed runs before values count as missing.
SNAPSHOT_TTL = timedelta(days=7)

asset_usage = FeatureView(
    name="asset_usage",
    entities=[asset],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="queries_7d", dtype=Int64, description="Logged queries reading the table, last 7 days."),
        Field(name="queries_30d", dtype=Int64, description="Logged queries reading the table, last 30 days."),
        Field(name="queries_90d", dtype=Int64, description="Logged queries reading the table, last 90 days."),
        Field(
            name="users_30d", dtype=Int64, description="Distinct users who queried the table, last 30 days."
        ),
        Field(
            name="days_since_last_use",
            dtype=Float32,
            description="Days since the table was last queried (capped at 365; 365 = never).",
        ),
        Field(
            name="business_query_share",
            dtype=Float32,
            description="Share of the business's queries in the last 30 days that read the table.",
        ),
        Field(
            name="feedback_used_30d",
            dtype=Int64,
            description="Served answers whose caller reported using the table, last 30 days.",
        ),
        Field(
            name="feedback_use_rate",
            dtype=Float32,
            description="Used / returned in served answers over the last 90 days (0 when never returned).",
        ),
    ],
    source=asset_features_source,
    online=True,
    description="How much and how recently analysts use a table (query log and serving feedback).",
    owner=OWNER,
    tags={"stage": "coarse_rank", "origin": "query_log,feedback"},
)

asset_metadata = FeatureView(
    name="asset_metadata",
    entities=[asset],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="column_count", dtype=Int64, description="Number of columns."),
        Field(
            name="comment_coverage",
            dtype=Float32,
            description="Share of columns with a non-empty comment (0 for a table without columns).",
        ),
        Field(
            name="metadata_age_days",
            dtype=Float32,
            description="Days between the metadata's last change (updated_at) and the snapshot.",
        ),
        Field(
            name="deprecated",
            dtype=Int64,
            description="1 when the table is soft-deleted or marked deprecated in its comment or properties.",
        ),
    ],
    source=asset_features_source,
    online=True,
    description="Quality and freshness of a table's catalog metadata (assets table).",
    owner=OWNER,
    tags={"stage": "coarse_rank", "origin": "assets"},
)

asset_co_usage = FeatureView(
    name="asset_co_usage",
    entities=[asset_pair],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="co_queries_30d", dtype=Int64, description="Queries reading both tables, last 30 days."),
        Field(name="co_queries_90d", dtype=Int64, description="Queries reading both tables, last 90 days."),
    ],
    source=asset_pair_features_source,
    online=True,
    description="How often two tables are queried together; set selection keeps such join partners together.",
    owner=OWNER,
    tags={"stage": "set_selection", "origin": "query_log"},
)
