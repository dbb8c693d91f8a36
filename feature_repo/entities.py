"""Entities: what features are keyed by."""

from feast import Entity, ValueType

OWNER = "ranking@assetmatch"

asset = Entity(
    name="asset",
    join_keys=["asset_id"],
    value_type=ValueType.STRING,
    description="One warehouse table or view, keyed by its stable asset_id (business.database.schema.name).",
    owner=OWNER,
    tags={"domain": "catalog", "team": "ranking"},
)

asset_pair = Entity(
    name="asset_pair",
    join_keys=["pair_id"],
    value_type=ValueType.STRING,
    description="An unordered pair of tables: pair_id is the two asset_ids, sorted, joined by '|'.",
    owner=OWNER,
    tags={"domain": "usage", "team": "ranking"},
)
