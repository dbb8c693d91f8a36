"""dbt source on a jaffle-shop manifest (v12) + catalog (v1) fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assetmatch.config import ConfigError, SourceSpec
from assetmatch.models import TableAsset
from assetmatch.sources.dbt import DbtSource

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "dbt"


def extract(catalog: bool = True, **options: object) -> tuple[dict[str, TableAsset], DbtSource]:
    opts: dict[str, object] = {"manifest_path": str(FIXTURES / "manifest.json"), **options}
    if catalog:
        opts["catalog_path"] = str(FIXTURES / "catalog.json")
    source = DbtSource.create(SourceSpec(name="dbt", type="dbt", business="shop", options=opts))
    assert isinstance(source, DbtSource)
    return {a.asset_id: a for a in source.iter_assets()}, source


def test_relations_with_docs_types_and_keys() -> None:
    assets, source = extract()
    assert sorted(assets) == [
        "shop.analytics.dbt_prod.customers",
        "shop.analytics.dbt_prod.orders",
        "shop.analytics.dbt_raw.raw_customers",
        "shop.analytics.dbt_staging.staging_orders",  # the alias is the relation name
        "shop.analytics.dbt_staging.stg_payments",
        "shop.analytics.snapshots.orders_snapshot",
        "shop.raw.stripe.payments_v2",  # a source: its identifier is the relation name
    ]
    customers = assets["shop.analytics.dbt_prod.customers"]
    assert customers.comment == "每个客户一行：首单、最近一单和订单数。One row per customer."
    assert customers.row_count == 100
    assert [(c.name, c.type, c.comment, c.primary_key, c.nullable) for c in customers.columns] == [
        ("customer_id", "integer", "客户主键 Primary key of the customer", True, False),
        ("first_name", "text", "Customer's first name", False, True),
        ("last_name", "text", "姓", False, True),  # undocumented: the warehouse comment
        ("number_of_orders", "bigint", "订单数", False, True),
    ]
    assert customers.properties["dbt_unique_id"] == "model.jaffle_shop.customers"
    assert customers.properties["dbt_materialized"] == "table"
    assert customers.properties["dbt_tags"] == "core"

    orders = assets["shop.analytics.dbt_prod.orders"]
    assert [fk.model_dump() for fk in orders.foreign_keys] == [
        {
            "columns": ["customer_id"],
            "ref_asset_id": "shop.analytics.dbt_prod.customers",
            "ref_columns": ["customer_id"],
        }
    ]
    assert orders.columns[0].name == "order_id" and not orders.columns[0].nullable  # not_null test
    assert (
        orders.comment == "Orders with their payment amounts by method."
    )  # description beats the table comment

    assert assets["shop.analytics.dbt_staging.stg_payments"].kind == "view"
    assert assets["shop.analytics.dbt_staging.stg_payments"].row_count is None
    payments = assets["shop.raw.stripe.payments_v2"]
    assert (payments.kind, payments.comment, payments.row_count) == (
        "table",
        "支付流水 One row per payment attempt.",
        113,
    )
    assert [c.name for c in payments.columns] == ["id", "orderid", "amount"]
    assert payments.properties["dbt_resource_type"] == "source"

    counts = source.report.counts
    assert counts["skipped_not_relations"] == 2  # the ephemeral and the disabled model
    assert (counts["models"], counts["seeds"], counts["snapshots"], counts["sources"]) == (4, 1, 1, 1)
    assert counts["not_in_catalog"] == 2


def test_manifest_only_keeps_documented_columns() -> None:
    assets, _ = extract(catalog=False, include_sources=False)
    assert "shop.raw.stripe.payments_v2" not in assets
    customers = assets["shop.analytics.dbt_prod.customers"]
    assert [(c.name, c.type) for c in customers.columns] == [
        ("customer_id", ""),
        ("first_name", ""),
        ("number_of_orders", ""),
    ]
    assert customers.row_count is None


def test_missing_or_broken_artifacts_are_clear_errors(tmp_path: Path) -> None:
    spec = SourceSpec(name="dbt", type="dbt", options={"manifest_path": str(tmp_path / "manifest.json")})
    with pytest.raises(ConfigError, match="does not exist"):
        list(DbtSource.create(spec).iter_assets())
    (tmp_path / "manifest.json").write_text('{"nodes": {', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        list(DbtSource.create(spec).iter_assets())
    (tmp_path / "manifest.json").write_text(json.dumps({"nodes": {}, "sources": {}}), encoding="utf-8")
    assert list(DbtSource.create(spec).iter_assets()) == []
