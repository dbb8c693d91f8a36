"""Names and Arrow schemas of the lake's Delta tables. The single place that defines them."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

COLUMN = pa.struct(
    [
        ("name", pa.string()),
        ("type", pa.string()),
        ("comment", pa.string()),
        ("nullable", pa.bool_()),
        ("primary_key", pa.bool_()),
    ]
)
FOREIGN_KEY = pa.struct(
    [
        ("columns", pa.list_(pa.string())),
        ("ref_asset_id", pa.string()),
        ("ref_columns", pa.list_(pa.string())),
    ]
)

ASSETS = "assets"
QUERY_LOG = "query_log"
REQUIREMENTS = "requirements"
GLOSSARY = "glossary"
QUARANTINE = "quarantine"
FEEDBACK = "feedback"
PROMOTIONS = "promotions"
SOURCE_STATE = "source_state"

SCHEMAS: dict[str, pa.Schema] = {
    # one row per table; merged on asset_id; soft-deleted rows keep deleted=true + deleted_at
    ASSETS: pa.schema(
        [
            ("asset_id", pa.string()),
            ("business", pa.string()),
            ("source", pa.string()),
            ("database", pa.string()),
            ("schema_name", pa.string()),
            ("name", pa.string()),
            ("kind", pa.string()),
            ("comment", pa.string()),
            ("columns", pa.list_(COLUMN)),
            ("foreign_keys", pa.list_(FOREIGN_KEY)),
            ("row_count", pa.int64()),
            ("properties", pa.string()),  # JSON object
            # false: declared (dbt YAML) but not seen in the warehouse catalog; null in rows written before it
            ("in_catalog", pa.bool_()),
            ("content_hash", pa.string()),
            ("deleted", pa.bool_()),
            ("deleted_at", TS),
            ("first_seen_at", TS),
            ("updated_at", TS),
            ("run_id", pa.string()),
        ]
    ),
    # one row per logged query; merged on query_id
    QUERY_LOG: pa.schema(
        [
            ("query_id", pa.string()),
            ("ts", TS),
            ("user", pa.string()),
            ("business", pa.string()),
            ("sql", pa.string()),
            ("requirement", pa.string()),
            ("tables", pa.list_(pa.string())),
            ("source", pa.string()),
            ("run_id", pa.string()),
        ]
    ),
    # labelled requirements; merged on id
    REQUIREMENTS: pa.schema(
        [
            ("id", pa.string()),
            ("business", pa.string()),
            ("text", pa.string()),
            ("gold_assets", pa.list_(pa.string())),
            ("split", pa.string()),
            ("ts", TS),
            ("sql", pa.string()),
            ("source", pa.string()),
            ("run_id", pa.string()),
            ("databases", pa.list_(pa.string())),  # the request's scope; null: the whole library
        ]
    ),
    # business glossary; merged on (business, term)
    GLOSSARY: pa.schema(
        [
            ("business", pa.string()),
            ("term", pa.string()),
            ("synonyms", pa.list_(pa.string())),
            ("description", pa.string()),
            ("assets", pa.list_(pa.string())),
            ("source", pa.string()),
            ("run_id", pa.string()),
        ]
    ),
    # rows refused by validation, with the reason; append-only
    QUARANTINE: pa.schema(
        [
            ("run_id", pa.string()),
            ("source", pa.string()),
            ("target_table", pa.string()),
            ("record_key", pa.string()),
            ("reason", pa.string()),
            ("payload", pa.string()),  # the refused record as JSON
            ("quarantined_at", TS),
        ]
    ),
    # serving feedback: which assets the caller really used for a request; append-only
    FEEDBACK: pa.schema(
        [
            ("request_id", pa.string()),
            ("business", pa.string()),
            ("requirement", pa.string()),
            ("returned_assets", pa.list_(pa.string())),
            ("used_assets", pa.list_(pa.string())),
            ("arm", pa.string()),
            ("model_version", pa.string()),
            ("ts", TS),
            ("databases", pa.list_(pa.string())),  # the request's scope; null: the whole library
        ]
    ),
    # A/B gate decisions; append-only
    PROMOTIONS: pa.schema(
        [
            ("decision_id", pa.string()),
            ("business", pa.string()),
            ("model_name", pa.string()),
            ("champion_version", pa.string()),
            ("challenger_version", pa.string()),
            ("verdict", pa.string()),
            ("metrics", pa.string()),  # JSON: means, diffs, CI, latency
            ("reason", pa.string()),
            ("ts", TS),
        ]
    ),
    # change detection at the source: the catalog fingerprint of each table a source read, with the
    # content hash its asset had when merged; merged on (source, asset_id). An entry counts only
    # while `assets` still holds that hash for a live row, so a lost or stale state means a re-read.
    SOURCE_STATE: pa.schema(
        [
            ("source", pa.string()),
            ("asset_id", pa.string()),
            ("fingerprint", pa.string()),
            ("content_hash", pa.string()),
            ("run_id", pa.string()),
        ]
    ),
}

# merge keys per table (append-only tables have none)
KEYS: dict[str, tuple[str, ...]] = {
    ASSETS: ("asset_id",),
    QUERY_LOG: ("query_id",),
    REQUIREMENTS: ("id",),
    GLOSSARY: ("business", "term"),
    SOURCE_STATE: ("source", "asset_id"),
}
