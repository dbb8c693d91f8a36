"""A request's scope (`databases`): every recall path searches inside it, namesakes outside it are
never found, and a scope that names no table of the business is a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.lake.delta import utcnow
from assetmatch.matching.matcher import Matcher, UnknownDatabaseError
from assetmatch.models import Column, ForeignKey, TableAsset
from assetmatch.recall.index import IndexSet
from assetmatch.recall.paths import USAGE_NEIGHBOURS

PATHS = ("lexical", "dense", "glossary", "usage", "graph")
TEXT = "count the invoices billed, receipts"


def shop_assets() -> list[TableAsset]:
    """Business `shop`: databases `sales` and `billing` both hold an `invoices` table (namesakes);
    business `other` holds a third, in a database of its own."""

    def table(
        business: str, database: str, name: str, comment: str, *columns: str, fk: str = ""
    ) -> TableAsset:
        keys = [ForeignKey(columns=["customer_id"], ref_asset_id=fk)] if fk else []
        return TableAsset(
            business=business,
            database=database,
            name=name,
            comment=comment,
            columns=[Column(name=c) for c in columns],
            foreign_keys=keys,
        )

    return [
        table(
            "shop",
            "sales",
            "invoices",
            "invoices issued",
            "invoice_id",
            "customer_id",
            "amount",
            fk="shop.sales.customers",
        ),
        table("shop", "sales", "customers", "customers", "customer_id", "name", "city"),
        table("shop", "billing", "invoices", "invoices billed", "invoice_id", "account_id", "amount"),
        table("shop", "billing", "accounts", "billing accounts", "account_id", "plan"),
        table("other", "ledger", "invoices", "invoices of the ledger", "invoice_id", "amount"),
    ]


def requirement(rid: str, text: str, gold: list[str]) -> dict[str, Any]:
    return {
        "id": rid,
        "business": "shop",
        "text": text,
        "gold_assets": gold,
        "split": "train",
        "ts": utcnow(),
        "sql": None,
        "source": "fixture",
        "run_id": "fixture",
    }


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[IndexSet, Settings]:
    root: Path = tmp_path_factory.mktemp("scope")
    settings = Settings.model_validate(
        {
            "lake": {"uri": str(root / "lake")},
            "recall": {"index_root": str(root / "indexes"), "paths": list(PATHS)},
            "businesses": [{"name": "shop"}, {"name": "other"}],
        }
    )
    lake = Lake.from_settings(settings)
    lake.merge_assets(shop_assets(), run_id="fixture")
    lake.upsert(
        "glossary",
        [
            {
                "business": "shop",
                "term": "receipts",
                "synonyms": ["bills"],
                "description": "",
                "assets": ["shop.sales.invoices", "shop.billing.invoices"],
                "source": "fixture",
                "run_id": "fixture",
            }
        ],
        run_id="fixture",
    )
    # past requests: many used billing's invoices, enough to fill every neighbour slot of the usage
    # vote (`USAGE_NEIGHBOURS`) for a request about billed invoices; one used sales' invoices and
    # customers, and must still vote when the request's scope is `sales`
    billed = [
        requirement(f"b{n}", f"how many invoices were billed in month {n}", ["shop.billing.invoices"])
        for n in range(1, USAGE_NEIGHBOURS + 6)
    ]
    lake.upsert(
        "requirements",
        [
            *billed,
            requirement(
                "r2",
                "invoice amount per customer city",
                ["shop.sales.invoices", "shop.sales.customers"],
            ),
        ],
        run_id="fixture",
    )
    return IndexSet.build(lake, settings), settings


def found(hits: dict[str, list[Any]]) -> dict[str, set[str]]:
    return {path: {h.asset_id for h in path_hits} for path, path_hits in hits.items()}


def test_without_a_scope_every_namesake_is_found(index: tuple[IndexSet, Settings]) -> None:
    built, settings = index
    hits = found(Matcher(built, settings).recall("shop", TEXT))
    assert {"shop.sales.invoices", "shop.billing.invoices"} <= hits["lexical"]
    assert {"shop.sales.invoices", "shop.billing.invoices"} <= hits["glossary"]
    assert hits["usage"] == {"shop.billing.invoices"}  # the billed requests crowd out the sales one


@pytest.mark.parametrize("database", ["sales", "billing"])
def test_every_path_searches_inside_the_scope(index: tuple[IndexSet, Settings], database: str) -> None:
    built, settings = index
    matcher = Matcher(built, settings)
    text = TEXT
    # the index's own paths, before the matcher drops anything outside the scope
    raw = found(built.recall(text, ["shop"], databases=[database]))
    raw["graph"] = {
        h.asset_id
        for h in built.expand(
            {"shop.sales.invoices": 1.0, "shop.billing.invoices": 1.0}, ["shop"], databases=[database]
        )
    }
    hits = found(matcher.recall("shop", text, databases=[database]))
    assert set(hits) == set(raw) == set(PATHS)
    for path, ids in raw.items():
        assert ids and all(built.assets[a].database == database for a in ids), (path, ids)
    for path, ids in hits.items():
        assert ids, path  # each path still finds the scope's tables
        assert all(built.assets[a].database == database for a in ids), (path, ids)
    assert f"shop.{database}.invoices" in hits["lexical"] & hits["dense"] & hits["glossary"]
    # only the past request that used a table in scope votes
    voted = {"sales": {"shop.sales.invoices", "shop.sales.customers"}, "billing": {"shop.billing.invoices"}}
    assert hits["usage"] == voted[database]
    result = matcher.match("shop", text, k=10, databases=[database])
    assert result.selected and all(built.assets[a].database == database for a in result.selected)
    assert all(built.assets[t.asset_id].database == database for t in result.ranked)


def test_a_scope_of_several_databases_and_the_index_alone(index: tuple[IndexSet, Settings]) -> None:
    built, _ = index
    rows = built.database_rows(["shop"], ["sales", "billing"])
    assert [built.asset_ids[r] for r in rows] == sorted(a for a in built.asset_ids if a.startswith("shop."))
    # another business's database is not in the scope of `shop`, even when named
    assert not len(built.database_rows(["shop"], ["ledger"]))
    hits = built.recall("invoices", ["shop"], databases=["ledger"])
    assert all(not path_hits for path_hits in hits.values())


@pytest.mark.parametrize(
    ("databases", "message"),
    [
        (["ledger"], "'ledger'"),  # another business's database: not visible to shop
        (["sales", "nowhere"], "'nowhere'"),
        ([], "names no database"),
    ],
)
def test_a_scope_without_tables_of_the_business_is_a_clear_error(
    index: tuple[IndexSet, Settings], databases: list[str], message: str
) -> None:
    built, settings = index
    with pytest.raises(UnknownDatabaseError, match=message):
        Matcher(built, settings).match("shop", "invoices", databases=databases)


def test_coarse_candidates_answer_a_requirement_in_the_scope_it_was_asked_in(
    index: tuple[IndexSet, Settings],
) -> None:
    """Training and judging read `CoarseCandidates`: a requirement asked in a scope gets a list of the
    scope's tables, and an out-of-fold list is used only where the fit asked it in the same scope."""
    from assetmatch.matching.matcher import oof_key
    from assetmatch.ranking.candidates import CoarseCandidates

    built, settings = index
    folded = {oof_key("shop", TEXT): (["shop.billing.invoices", "shop.sales.invoices"], [0.9, 0.1])}
    candidates = CoarseCandidates(Matcher(built, settings), folded)
    assert candidates.coarse("shop", TEXT, 10).ids == ["shop.billing.invoices", "shop.sales.invoices"]
    assert candidates.oof_hits == 1
    answer = candidates.coarse("shop", TEXT, 10, ("sales",))
    assert answer.ids and all(built.assets[a].database == "sales" for a in answer.ids + answer.selected)
    assert candidates.oof_hits == 1  # ranked live: the fit never asked it in `sales`

    folded[oof_key("shop", TEXT, ["sales"])] = (["shop.sales.customers", "shop.sales.invoices"], [0.8, 0.7])
    candidates = CoarseCandidates(Matcher(built, settings), folded)
    assert candidates.coarse("shop", TEXT, 10, ("sales",)).ids == [
        "shop.sales.customers",
        "shop.sales.invoices",
    ]
    assert candidates.oof_hits == 1


def test_a_stored_scope_keeps_the_databases_the_business_still_holds(
    index: tuple[IndexSet, Settings],
) -> None:
    """A labelled requirement's scope may name a database dropped since: it is asked in the rest of its
    scope, or in the whole library when nothing is left, never refused as a new request would be."""
    from assetmatch.ranking.candidates import CoarseCandidates

    built, settings = index
    matcher = Matcher(built, settings)
    assert matcher.held_scope("shop", ["sales", "gone"]) == ("sales",)
    assert matcher.held_scope("shop", ["billing", "sales"]) == ("billing", "sales")
    assert matcher.held_scope("shop", ["ledger"]) is None  # another business's database
    assert matcher.held_scope("shop", None) is None
    candidates = CoarseCandidates(matcher)
    answer = candidates.coarse("shop", TEXT, 10, ("sales", "gone"))
    assert answer.ids and all(built.assets[a].database == "sales" for a in answer.ids)
    assert candidates.coarse("shop", TEXT, 10, ("gone",)).ids == candidates.coarse("shop", TEXT, 10).ids


def test_the_fit_asks_a_scoped_requirement_in_its_scope(index: tuple[IndexSet, Settings]) -> None:
    """The coarse fit recalls each labelled requirement where it was asked: its out-of-fold list holds
    only its scope's tables and is stored under its scope (`oof_key`), where training finds it."""
    from assetmatch.matching.fit import fit_matching
    from assetmatch.matching.matcher import oof_key
    from assetmatch.models import Requirement

    built, settings = index
    texts = ["invoices issued to customers", "invoices billed to accounts", "billing accounts plan"]
    golds = [["shop.sales.invoices"], ["shop.billing.invoices"], ["shop.billing.accounts"]]
    train = [
        Requirement(
            id=f"r{i}",
            business="shop",
            text=f"{text} {n}",
            gold_assets=gold,
            databases=[gold[0].split(".")[1]],
        )
        for n in range(4)
        for i, (text, gold) in enumerate(zip(texts, golds))
    ]
    fit = fit_matching(built, settings, train, seed=0)
    for req in train:
        assert oof_key(req.business, req.text) not in fit.oof
        ids, _ = fit.oof[oof_key(req.business, req.text, req.databases)]
        assert ids and {built.assets[a].database for a in ids} == set(req.databases or ())
