"""Training data: labelled requirements from the lake, hard negatives from recall, stable splits."""

from __future__ import annotations

from datetime import UTC, datetime

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import Column, QueryLogEntry, TableAsset
from assetmatch.text import same_query_key
from assetmatch.training.pairs import (
    LabelledRequirement,
    build_pairs,
    fingerprint,
    in_holdout,
    labelled_from_lake,
    split_holdout,
)

LIBRARY = ["g.active_users", "g.paying_users", "g.orders", "g.items", "g.servers", "g.guilds"]


def twin_candidates(business: str, text: str, k: int, databases: tuple[str, ...] | None = None) -> list[str]:
    """Recall that always puts the confusable twin next to the answer."""
    return ["g.paying_users", "g.active_users", "g.orders"][:k]


def test_hard_negatives_are_the_recall_twins_and_never_gold() -> None:
    req = LabelledRequirement("r1", "g", "daily active users", ("g.active_users",))
    pairs = build_pairs(
        [req], LIBRARY, twin_candidates, hard_negatives=2, random_negatives=1, candidate_k=10, seed=1
    )
    by_kind = {kind: [p.asset_id for p in pairs if p.kind == kind] for kind in ("positive", "hard", "random")}
    assert by_kind["positive"] == ["g.active_users"]
    assert sorted(by_kind["hard"]) == ["g.orders", "g.paying_users"]  # the top recall twins, gold skipped
    assert len(by_kind["random"]) == 1 and by_kind["random"][0] not in {
        "g.active_users",
        "g.paying_users",
        "g.orders",
    }
    assert all(p.label == (1.0 if p.kind == "positive" else 0.0) for p in pairs)


def test_pairs_are_deterministic_and_fill_up_with_random_negatives() -> None:
    reqs = [LabelledRequirement(f"r{i}", "g", f"text {i}", ("g.items",)) for i in range(5)]
    a = build_pairs(reqs, LIBRARY, None, hard_negatives=2, random_negatives=1, candidate_k=5, seed=3)
    b = build_pairs(reqs, LIBRARY, None, hard_negatives=2, random_negatives=1, candidate_k=5, seed=3)
    assert a == b
    assert sum(1 for p in a if p.kind == "random") == 15  # no recall: 2 + 1 random per requirement


def test_holdout_is_stable_and_keeps_paraphrase_texts_together() -> None:
    assert in_holdout("abc", 0.5) == in_holdout("abc", 0.5)
    items = [LabelledRequirement(f"r{i}", "g", f"Question {i % 20}", ("g.items",)) for i in range(200)]
    train, validation = split_holdout(items, 0.3)
    assert 20 < len(validation) < 110
    assert not {r.text.lower() for r in train} & {r.text.lower() for r in validation}


def test_holdout_keeps_the_paraphrases_of_one_query_together() -> None:
    # 40 queries, each asked in 3 different words: a validation question whose paraphrase was
    # trained on would judge the adapter on what it memorised
    items = [
        LabelledRequirement(
            f"r{i}",
            "g",
            f"wording {i}",
            ("g.items",),
            query=same_query_key(f"select {i // 3} from items", ["g.items"]),
        )
        for i in range(120)
    ]
    train, validation = split_holdout(items, 0.3)
    assert 0 < len(validation) < 120 and len(validation) % 3 == 0
    assert not {r.query for r in train} & {r.query for r in validation}
    # the same SQL over other tables (another database's namesake) is another request
    other = [
        LabelledRequirement(
            f"o{i}", "g", f"w {i}", (f"g.t{i}",), query=same_query_key("select 1", [f"g.t{i}"])
        )
        for i in range(40)
    ]
    train, validation = split_holdout(other, 0.5)
    assert train and validation


def test_labelled_from_lake_reads_train_split_query_log_and_feedback(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    now = datetime.now(UTC)
    assets = [
        TableAsset(business="g", name=n, columns=[Column(name="id")]) for n in ("active_users", "orders")
    ]
    lake.merge_assets(assets, run_id="t")
    req_row = {"business": "g", "ts": now, "sql": None, "source": "s", "run_id": "t"}
    lake.upsert(
        T.REQUIREMENTS,
        [
            {
                **req_row,
                "id": "a",
                "text": "active users",
                "gold_assets": ["g.active_users"],
                "split": "train",
            },
            {**req_row, "id": "b", "text": "secret test one", "gold_assets": ["g.orders"], "split": "test"},
            {**req_row, "id": "c", "text": "gone table", "gold_assets": ["g.deleted"], "split": "train"},
        ],
        run_id="t",
    )
    entry = QueryLogEntry(
        ts=now, business="g", sql="select 1 from orders", requirement="orders last week", tables=["g.orders"]
    )
    lake.upsert(T.QUERY_LOG, [{**entry.model_dump(), "run_id": "t"}], run_id="t")
    lake.append(
        T.FEEDBACK,
        [
            {
                "request_id": "q1",
                "business": "g",
                "requirement": "who was active",
                "returned_assets": ["g.active_users", "g.orders"],
                "used_assets": ["g.active_users"],
                "arm": "champion",
                "model_version": "1",
                "ts": now,
            }
        ],
        run_id="t",
    )
    got = labelled_from_lake(lake, "g", {a.asset_id for a in assets})
    assert {(r.origin, r.text, r.gold) for r in got} == {
        ("requirements", "active users", ("g.active_users",)),
        ("query_log", "orders last week", ("g.orders",)),
        ("feedback", "who was active", ("g.active_users",)),
    }
    # the query that answered a logged request keeps its paraphrases on one side of the holdout
    assert {r.origin: r.query for r in got}["query_log"] == same_query_key(
        "SELECT 1  from orders", ["g.orders"]
    )
    fp = fingerprint(got, assets)
    assert fp == fingerprint(list(reversed(got)), assets)
    changed = [assets[0].model_copy(update={"comment": "new comment"}), assets[1]]
    assert fp != fingerprint(got, changed)
