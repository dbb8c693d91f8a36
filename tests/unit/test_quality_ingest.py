"""Validation and the ingest pipeline on a real Delta folder, with an in-process source plugin.

The `memory` source below is a real `Source` subclass registered in the plugin registry for the
test; it yields the records given in its options, and can crash half-way like a dropped
connection would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from assetmatch.config import BusinessConfig, Settings, SourceSpec
from assetmatch.ingest import ingest_source, run_ingest
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import Column, GlossaryTerm, TableAsset
from assetmatch.quality import suites, validate_batch
from assetmatch.sources import registry
from assetmatch.sources.base import Source, SourceConfig


class MemoryConfig(SourceConfig):
    assets: list[dict[str, Any]] = Field(default_factory=list, description="TableAsset records as dicts.")
    glossary: list[dict[str, Any]] = Field(default_factory=list, description="GlossaryTerm records as dicts.")
    fail_after: int | None = Field(default=None, description="Raise ConnectionError after this many assets.")


class MemorySource(Source[MemoryConfig]):
    config_class = MemoryConfig

    def iter_assets(self) -> Iterator[TableAsset]:
        for i, record in enumerate(self.config.assets):
            if self.config.fail_after is not None and i == self.config.fail_after:
                raise ConnectionError("connection reset by peer")
            yield TableAsset.model_validate(record)

    def iter_glossary(self) -> Iterator[GlossaryTerm]:
        for record in self.config.glossary:
            yield GlossaryTerm.model_validate(record)


class _EntryPoint:
    def __init__(self, cls: type) -> None:
        self.cls = cls

    def load(self) -> type:
        return self.cls


@pytest.fixture(autouse=True)
def memory_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._entry_points(), "memory", _EntryPoint(MemorySource))


def table(
    name: str, comment: str = "", business: str = "g1", n_columns: int = 2, **kw: Any
) -> dict[str, Any]:
    columns = [Column(name=f"c{i}", type="int", comment=f"column {i}") for i in range(n_columns)]
    return TableAsset(
        business=business, database="dw", name=name, comment=comment, columns=columns, **kw
    ).model_dump()


def settings_for(lake_uri: str, *specs: SourceSpec, **validation: Any) -> Settings:
    return Settings(
        lake={"uri": lake_uri},
        businesses=[BusinessConfig(name="g1"), BusinessConfig(name="g2")],
        sources=list(specs),
        validation=validation,
    )


def spec(name: str = "wh", mode: str = "full", **options: Any) -> SourceSpec:
    return SourceSpec(name=name, type="memory", mode=mode, options=options)  # type: ignore[arg-type]


def good_tables(n: int) -> list[dict[str, Any]]:
    return [table(f"t{i}", comment=f"table {i}") for i in range(n)]


# ---- validation ------------------------------------------------------------------------------
def test_each_bad_row_kind_is_quarantined_with_its_reason_and_good_rows_land(lake_uri: str) -> None:
    bad = {
        "g1.dw.dup": [table("dup"), table("dup", comment="second copy")],
        "(blank id)": [table("blank", asset_id="   ")],
        "g1.dw.nocols": [table("nocols", n_columns=0)],
        "g1.dw.toolong": [table("toolong", comment="x" * 200)],
        "g1.dw.wide": [table("wide", n_columns=12)],
        "g1.dw.mojibake": [table("mojibake", comment="caf\u00c3\u00a9 daily")],
        "g9.dw.stranger": [table("stranger", business="g9")],
        "nobiz": [table("nobiz", business="", asset_id="nobiz")],
        "g1.dw.dupcol": [{**table("dupcol"), "columns": [{"name": "a"}, {"name": "a"}]}],
    }
    records = good_tables(12) + [r for rs in bad.values() for r in rs]
    settings = settings_for(lake_uri, spec(assets=records), max_text_length=100, max_columns=10)
    summary = run_ingest(settings, run_id="run-q")
    assert summary.ok, summary.failed
    counts = summary.sources[0].tables[T.ASSETS]
    assert (counts.extracted, counts.inserted, counts.quarantined) == (len(records), 12, 10)

    lake = Lake(lake_uri)
    assert {a.name for a in lake.read_assets()} == {f"t{i}" for i in range(12)}
    quarantined = lake.read_quarantine(run_id="run-q")
    reasons = {r["record_key"]: r["reason"] for r in quarantined}
    assert reasons == {
        "g1.dw.dup": "duplicate asset_id",
        "": "empty asset_id",
        "g1.dw.nocols": "no columns",
        "g1.dw.toolong": "text too long",
        "g1.dw.wide": "too many columns",
        "g1.dw.mojibake": "broken encoding",
        "g9.dw.stranger": "unknown business",
        "nobiz": "missing business",
        "g1.dw.dupcol": "duplicate column name: a",
    }
    assert sum(r["record_key"] == "g1.dw.dup" for r in quarantined) == 2  # both copies kept
    assert all(r["run_id"] == "run-q" and r["target_table"] == T.ASSETS for r in quarantined)
    payload = json.loads(next(r["payload"] for r in quarantined if r["record_key"] == "g1.dw.wide"))
    assert payload["name"] == "wide" and len(payload["columns"]) == 12
    validation = summary.sources[0].validation[T.ASSETS]
    assert validation["bad"] == 10 and validation["reasons"]["duplicate asset_id"] == 2
    assert any(
        e["expectation"] == "expect_column_values_to_be_unique" and not e["success"]
        for e in validation["expectations"]
    )


def test_unknown_business_is_accepted_when_no_businesses_are_configured(lake_uri: str) -> None:
    settings = Settings(lake={"uri": lake_uri})
    result = validate_batch(T.ASSETS, [TableAsset.model_validate(table("t", business="anything"))], settings)
    assert result.success and len(result.good) == 1


def test_glossary_duplicates_and_secrets_in_payload(lake_uri: str) -> None:
    terms = [
        {"business": "g1", "term": "DAU", "description": "daily actives"},
        {"business": "g1", "term": "DAU", "description": "again"},
        {"business": "g2", "term": "DAU"},
        {"business": "g1", "term": "ARPU"},
        {"business": "g1", "term": "LTV"},
    ]
    leaky = table(
        "leaky", business="g9", properties={"password": "hunter2", "dsn": "postgresql://bob:hunter2@db/x"}
    )
    settings = settings_for(
        lake_uri, spec(mode="incremental", assets=[*good_tables(3), leaky], glossary=terms)
    )
    summary = run_ingest(settings, run_id="run-g")
    assert summary.ok
    glossary = {(t.business, t.term) for t in Lake(lake_uri).read_glossary()}
    assert glossary == {("g2", "DAU"), ("g1", "ARPU"), ("g1", "LTV")}
    quarantined = Lake(lake_uri).read_quarantine(run_id="run-g")
    assert sorted(r["reason"] for r in quarantined) == [
        "duplicate term",
        "duplicate term",
        "unknown business",
    ]
    leaked = next(r["payload"] for r in quarantined if r["record_key"] == "g9.dw.leaky")
    assert "hunter2" not in leaked and "bob:**********@db" in leaked


def test_mostly_bad_batch_fails_and_merges_nothing_but_keeps_quarantine(lake_uri: str) -> None:
    records = good_tables(2) + [table(f"bad{i}", n_columns=0) for i in range(5)]
    settings = settings_for(lake_uri, spec(assets=records))
    summary = run_ingest(settings, run_id="run-bad")
    assert not summary.ok
    failure = summary.failed[0]
    assert "5 of 7 rows failed validation" in (failure.error or "") and "no columns (5)" in (
        failure.error or ""
    )
    lake = Lake(lake_uri)
    assert lake.version(T.ASSETS) is None  # nothing merged
    assert len(lake.read_quarantine(run_id="run-bad")) == 5  # nothing lost


def test_shrink_guard_refuses_a_snapshot_missing_most_tables(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    assert run_ingest(settings_for(lake_uri, spec(assets=good_tables(10)))).ok
    version = lake.version(T.ASSETS)

    shrunk = run_ingest(settings_for(lake_uri, spec(assets=good_tables(5))))
    assert not shrunk.ok and "reports 5 of the 10 tables" in (shrunk.failed[0].error or "")
    assert lake.version(T.ASSETS) == version and len(lake.read_assets()) == 10

    # an incremental source never soft-deletes, and a small real drop passes the guard
    assert run_ingest(settings_for(lake_uri, spec(mode="incremental", assets=good_tables(5)))).ok
    dropped = run_ingest(settings_for(lake_uri, spec(assets=good_tables(9))))
    assert dropped.ok and dropped.sources[0].tables[T.ASSETS].soft_deleted == 1
    assert len(lake.read_assets()) == 9


def test_quarantined_table_of_a_snapshot_keeps_its_previous_version(lake_uri: str) -> None:
    assert run_ingest(settings_for(lake_uri, spec(assets=good_tables(4)))).ok
    broken = [*good_tables(3), table("t3", n_columns=0)]
    summary = run_ingest(settings_for(lake_uri, spec(assets=broken)))
    assert summary.ok and summary.sources[0].tables[T.ASSETS].soft_deleted == 0
    assert len(Lake(lake_uri).read_assets()) == 4


# ---- normalization ---------------------------------------------------------------------------
def test_full_width_and_whitespace_variants_hash_equal(lake_uri: str) -> None:
    plain = [table("orders", comment="Daily orders (GMV) 2024")]
    variant = [
        {
            **table("orders", comment="Ｄａｉｌｙ　orders  (ＧＭＶ)\t２０２４\u200b "),
            "columns": [{**c, "comment": f" {c['comment']}\n"} for c in plain[0]["columns"]],
        }
    ]
    assert run_ingest(settings_for(lake_uri, spec(assets=plain))).ok
    second = run_ingest(settings_for(lake_uri, spec(assets=variant)))
    assert second.ok and second.sources[0].tables[T.ASSETS].unchanged == 1
    lake = Lake(lake_uri)
    assert lake.version(T.ASSETS) == 0
    assert lake.read_assets()[0].comment == "Daily orders (GMV) 2024"


# ---- crashes leave the previous version ------------------------------------------------------
def test_source_crashing_half_way_writes_nothing(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    assert run_ingest(settings_for(lake_uri, spec(assets=good_tables(6)))).ok
    changed = [table(f"t{i}", comment="changed") for i in range(6)]
    summary = run_ingest(settings_for(lake_uri, spec(assets=changed, fail_after=3)))
    assert not summary.ok and "ConnectionError: connection reset by peer" in (summary.failed[0].error or "")
    assert lake.version(T.ASSETS) == 0
    assert {a.comment for a in lake.read_assets()} == {f"table {i}" for i in range(6)}
    assert lake.version(T.QUARANTINE) is None


def test_crash_between_validate_and_asset_merge_keeps_assets_at_previous_version(
    lake_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(lake_uri)
    first = settings_for(lake_uri, spec(assets=good_tables(3)))
    assert run_ingest(first).ok
    second = settings_for(
        lake_uri,
        spec(
            assets=[table(f"t{i}", comment="v2") for i in range(3)],
            glossary=[{"business": "g1", "term": "x"}],
        ),
    )
    original = Lake.upsert_rows

    def upsert_then_die(self: Lake, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)  # the glossary commit lands ...
        raise RuntimeError("process killed")  # ... and the process dies before the asset merge

    monkeypatch.setattr(Lake, "upsert_rows", upsert_then_die)
    with pytest.raises(RuntimeError, match="process killed"):
        ingest_source(second, second.sources[0], "run-crash", lake)
    assert lake.version(T.ASSETS) == 0
    assert {a.comment for a in lake.read_assets()} == {"table 0", "table 1", "table 2"}

    monkeypatch.setattr(Lake, "upsert_rows", original)
    rerun = ingest_source(second, second.sources[0], "run-again", lake)  # idempotent: completes the work
    assert rerun.tables[T.GLOSSARY].unchanged == 1 and rerun.tables[T.ASSETS].updated == 3
    assert lake.version(T.ASSETS) == 1 and lake.version(T.GLOSSARY) == 0


def test_a_failing_source_does_not_stop_the_others(lake_uri: str) -> None:
    broken = SourceSpec(name="broken", type="no-such-plugin")
    settings = settings_for(lake_uri, broken, spec(assets=good_tables(2)))
    summary = run_ingest(settings)
    by_name = {s.source: s for s in summary.sources}
    assert by_name["wh"].ok and by_name["wh"].tables[T.ASSETS].inserted == 2
    assert not by_name["broken"].ok and "no-such-plugin" in (by_name["broken"].error or "")
    assert summary.versions_after[T.ASSETS] == 0


# ---- the suites are the checked-in files -----------------------------------------------------
def test_checked_in_suites_are_gx_suites_for_every_ingested_table() -> None:
    from great_expectations.core import ExpectationSuite

    folder = suites.expectations_dir()
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(suites.SUITE_TABLES)
    for name in suites.SUITE_TABLES:
        suite = suites.load_suite(name, {"businesses": ["g1"]})
        assert isinstance(suite, ExpectationSuite) and suite.name == name
        document = json.loads((folder / f"{name}.json").read_text())
        assert len(suite.expectations) == len(document["expectations"])
        assert all(e.meta and e.meta.get("reason") for e in suite.expectations)


def test_editing_a_suite_file_changes_what_is_refused(
    tmp_path: Path, lake_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "expectations"
    shutil.copytree(suites.expectations_dir(), folder)
    document = json.loads((folder / "assets.json").read_text())
    document["expectations"].append(
        {
            "type": "expect_column_value_lengths_to_be_between",
            "kwargs": {"column": "comment", "min_value": 1},
            "meta": {"reason": "undocumented table"},
        }
    )
    (folder / "assets.json").write_text(json.dumps(document))
    monkeypatch.setenv(suites.ENV_VAR, str(folder))
    records = [
        TableAsset.model_validate(table("a", comment="documented")),
        TableAsset.model_validate(table("b")),
    ]
    result = validate_batch(T.ASSETS, records, settings_for(lake_uri))
    assert [r.name for r in result.good] == ["a"]
    assert [b.reasons for b in result.bad] == [["undocumented table"]]


def test_pipeline_normalization_matches_the_model_and_covers_ids() -> None:
    from assetmatch.ingest import normalize_asset

    raw = TableAsset(
        asset_id="ｇ1.dw.orders ",
        business="g1",
        database=" dw",
        name="ｏｒｄｅｒｓ",
        comment="Ｄａｉｌｙ\u3000orders\x00  (ＧＭＶ)",
        columns=[
            Column(name=" id ", type="ＩＮＴ", comment="key\n"),
            Column(name="plain", comment="already fine"),
        ],
    )
    ours = normalize_asset(raw, "wh")
    model = raw.normalized()
    assert (ours.name, ours.comment) == (model.name, model.comment) == ("orders", "Daily orders (GMV)")
    assert [(c.name, c.comment) for c in ours.columns] == [(c.name, c.comment) for c in model.columns]
    assert (ours.asset_id, ours.database, ours.columns[0].type, ours.source) == (
        "g1.dw.orders",
        "dw",
        "INT",
        "wh",
    )
    assert ours.columns[1] is raw.columns[1]  # unchanged columns are not copied
