"""Requirements synthesized from metadata: what they are built from (and never from), how they blend
with labels, and that a library with no labels gets multi-table sets from them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.matching.fit import blend, fit_matching, synthetic_requirements
from assetmatch.matching.matcher import Matcher
from assetmatch.matching.synthetic import SPLIT, SynthesisOptions, synthesize_requirements
from assetmatch.models import Column, ForeignKey, GlossaryTerm, QueryLogEntry, Requirement, TableAsset


def shop(db: str) -> list[TableAsset]:
    """A small store database: customers <- orders -> products, and a standalone table."""
    return [
        TableAsset(
            business="lib",
            database=db,
            name="customer",
            comment="customer",
            columns=[
                Column(name="customer_id", primary_key=True),
                Column(name="full_name", comment="customer name"),
                Column(name="city"),
            ],
        ),
        TableAsset(
            business="lib",
            database=db,
            name="product",
            comment="product",
            columns=[Column(name="product_id", primary_key=True), Column(name="title"), Column(name="price")],
        ),
        TableAsset(
            business="lib",
            database=db,
            name="orders",
            comment="order",
            columns=[
                Column(name="order_id", primary_key=True),
                Column(name="customer_id"),
                Column(name="product_id"),
                Column(name="quantity"),
            ],
            foreign_keys=[
                ForeignKey(columns=["customer_id"], ref_asset_id=f"lib.{db}.customer"),
                ForeignKey(columns=["product_id"], ref_asset_id=f"lib.{db}.product"),
            ],
        ),
        TableAsset(
            business="lib",
            database=db,
            name="weather",
            comment="daily weather",
            columns=[Column(name="day"), Column(name="temperature"), Column(name="rain_mm")],
        ),
    ]


def school() -> list[TableAsset]:
    """Another database, of another domain: student <- enrolment -> course."""
    return [
        TableAsset(
            business="lib",
            database="school",
            name="student",
            columns=[
                Column(name="student_id", primary_key=True),
                Column(name="first_name"),
                Column(name="age"),
            ],
        ),
        TableAsset(
            business="lib",
            database="school",
            name="course",
            columns=[
                Column(name="course_id", primary_key=True),
                Column(name="course_title"),
                Column(name="credits"),
            ],
        ),
        TableAsset(
            business="lib",
            database="school",
            name="enrolment",
            columns=[Column(name="student_id"), Column(name="course_id"), Column(name="grade")],
            foreign_keys=[
                ForeignKey(columns=["student_id"], ref_asset_id="lib.school.student"),
                ForeignKey(columns=["course_id"], ref_asset_id="lib.school.course"),
            ],
        ),
        TableAsset(
            business="lib",
            database="school",
            name="teacher",
            columns=[Column(name="teacher_id"), Column(name="teacher_name"), Column(name="salary")],
        ),
    ]


def library(n_db: int = 1) -> dict[str, TableAsset]:
    return {a.asset_id: a for i in range(n_db) for a in shop(f"shop{i}")}


LOGGED_TEXT = "monthly revenue of the loyalty programme"
LOG = [
    QueryLogEntry(
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        business="lib",
        sql="SELECT * FROM weather w JOIN customer c ON c.city = w.city",
        requirement=LOGGED_TEXT,
        tables=["lib.shop0.weather", "lib.shop0.customer"],
    )
]
GLOSSARY = [GlossaryTerm(business="lib", term="GMV", synonyms=["成交额"], assets=["lib.shop0.orders"])]


def by_kind(reqs: list[Requirement]) -> dict[str, list[Requirement]]:
    out: dict[str, list[Requirement]] = {}
    for r in reqs:
        out.setdefault(r.source.removeprefix("synthetic:"), []).append(r)
    return out


def test_every_kind_is_built_from_metadata_and_marked_synthetic() -> None:
    reqs = synthesize_requirements(library(), GLOSSARY, LOG, SynthesisOptions(per_table=2, seed=1))
    kinds = by_kind(reqs)
    assert set(kinds) == {"table", "fk", "bridge", "co-usage", "glossary"}
    assert all(r.split == SPLIT for r in reqs)  # never an evaluation split
    assert {tuple(r.gold_assets) for r in kinds["fk"]} == {
        ("lib.shop0.customer", "lib.shop0.orders"),
        ("lib.shop0.orders", "lib.shop0.product"),
    }
    assert [r.gold_assets for r in kinds["bridge"]] == [
        ["lib.shop0.customer", "lib.shop0.orders", "lib.shop0.product"]
    ]
    assert [r.gold_assets for r in kinds["co-usage"]] == [["lib.shop0.customer", "lib.shop0.weather"]]
    assert {r.text for r in kinds["glossary"]} and all(
        r.gold_assets == ["lib.shop0.orders"] for r in kinds["glossary"]
    )
    assert {r.gold_assets[0] for r in kinds["table"]} == set(library())  # every table, alone
    assert len(kinds["table"]) <= 2 * 4  # two per table, duplicates dropped
    # the query log gives which tables go together, never its SQL or logged request text
    assert not any(LOGGED_TEXT in r.text or "JOIN" in r.text for r in reqs)


def test_synthesis_is_deterministic_for_a_seed_and_bounded() -> None:
    one = synthesize_requirements(library(3), options=SynthesisOptions(seed=7))
    two = synthesize_requirements(library(3), options=SynthesisOptions(seed=7))
    assert [(r.id, r.text) for r in one] == [(r.id, r.text) for r in two]
    capped = synthesize_requirements(library(3), options=SynthesisOptions(seed=7, max_total=5))
    assert len(capped) == 5


def test_chinese_metadata_gets_chinese_requests() -> None:
    asset = TableAsset(
        business="g",
        name="dws_user_active_1d",
        comment="日活跃用户",
        columns=[Column(name="active_days", comment="活跃天数")],
    )
    reqs = synthesize_requirements(
        {asset.asset_id: asset}, options=SynthesisOptions(per_table=4, zh_share=0.0)
    )
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in r.text) for r in reqs)
    assert all("日活跃用户" in r.text or "活跃天数" in r.text for r in reqs)


def labelled(n: int) -> list[Requirement]:
    return [
        Requirement(id=f"r{i}", business="lib", text=f"q{i}", gold_assets=["lib.shop0.orders"])
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("mode", "n_labels", "expected_synthetic", "trained_on"),
    [
        ("auto", 0, 1000, "synthetic"),
        ("auto", 200, 1000, "blended"),
        ("auto", 500, 1000, "blended"),
        ("auto", 1500, 333, "blended"),
        ("only", 1500, 1000, "synthetic"),
        ("off", 10, 0, "labelled"),
        ("off", 0, 0, "none"),
    ],
)
def test_blend_keeps_a_synthetic_share_that_fades_as_labels_arrive(
    mode: str, n_labels: int, expected_synthetic: int, trained_on: str
) -> None:
    settings = Settings.model_validate({"matching": {"synthetic": mode}})
    synthetic = [r.model_copy(update={"id": f"s{i}", "split": SPLIT}) for i, r in enumerate(labelled(1000))]
    chosen, what = blend(labelled(n_labels), synthetic, settings)
    assert sum(r.split == SPLIT for r in chosen) == expected_synthetic
    assert sum(r.split != SPLIT for r in chosen) == (0 if mode == "only" else n_labels)
    assert what == trained_on


def test_a_larger_label_count_keeps_a_subset_of_what_a_smaller_one_kept() -> None:
    settings = Settings()
    synthetic = [r.model_copy(update={"id": f"s{i}", "split": SPLIT}) for i, r in enumerate(labelled(1000))]
    kept = [
        {r.id for r in blend(labelled(n), synthetic, settings)[0] if r.split == SPLIT}
        for n in (600, 1000, 3000)
    ]
    assert kept[2] < kept[1] < kept[0]


@pytest.fixture
def index_of_shops(tmp_path: Path) -> tuple[Settings, object]:
    from assetmatch.recall.index import IndexSet

    settings = Settings.model_validate(
        {
            "lake": {"uri": str(tmp_path / "lake")},
            "recall": {"index_root": str(tmp_path / "indexes"), "paths": ["lexical", "graph"]},
        }
    )
    lake = Lake.from_settings(settings)
    lake.merge_assets([*library().values(), *school()], run_id="t", snapshot_of="catalog")
    return settings, IndexSet.build(lake, settings)


def test_with_no_labels_the_fit_is_synthetic_and_selection_returns_foreign_key_joined_sets(
    index_of_shops: tuple[Settings, object],
) -> None:
    settings, index = index_of_shops
    synthetic = synthetic_requirements(index, settings, seed=0)  # type: ignore[arg-type]
    fit = fit_matching(index, settings, [], synthetic=synthetic)  # type: ignore[arg-type]
    assert fit.report["trained_on"] == "synthetic" and fit.report["n_labelled"] == 0
    assert fit.oof == {}  # fine rankers never train on synthetic lists
    # nor does the learned set selection: a synthetic requirement's set is what its template drew
    assert fit.set_model is None and fit.report["set_model"]["n_requirements"] == 0
    matcher = Matcher(index, settings, coarse=fit.coarse, selector=fit.selector())  # type: ignore[arg-type]
    result = matcher.match("lib", "Show the full name of each customer and the quantity of their order")
    assert result.coarse_model == "synthetic"
    assert len(result.selected) >= 2
    assert {a.rsplit(".", 1)[-1] for a in result.selected} >= {"customer", "orders"}
    assert len({a.rsplit(".", 2)[-2] for a in result.selected}) == 1  # one database's tables


def test_untrained_fusion_says_so(index_of_shops: tuple[Settings, object]) -> None:
    settings, index = index_of_shops
    result = Matcher(index, settings).match("lib", "customer names")  # type: ignore[arg-type]
    assert result.coarse_model == "fusion"
