"""A labelled requirement asked in a scope (`databases`: the database a Text2SQL session was connected
to) is trained on and judged with the list serving gave it: its hard negatives, validation list and
the gate's list all come from inside its scope."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from assetmatch.matching.fine import CoarseAnswer
from assetmatch.models import Column, TableAsset
from assetmatch.ranking.candidates import Bm25Candidates
from assetmatch.ranking.config import RankerConfig
from assetmatch.training.pairs import LabelledRequirement, TrainingData, build_pairs
from assetmatch.training.train import judge, train_business

# two databases with the same tables: every question matches a namesake outside its scope as well
ASSETS = [
    TableAsset(
        business="g",
        database=db,
        name=name,
        comment=comment,
        columns=[Column(name="dt"), Column(name="amount")],
    )
    for db in ("sales", "billing")
    for name, comment in (
        ("invoices", "invoices issued with amounts"),
        ("payments", "payments received per day"),
        ("customers", "customers and their city"),
    )
]
LIBRARY = {a.asset_id: a for a in ASSETS}
TEXTS = {
    "invoices": "total invoice amount",
    "payments": "payments received yesterday",
    "customers": "customers per city",
}


def requirements(database: str) -> list[LabelledRequirement]:
    return [
        LabelledRequirement(
            f"{database}-{name}",
            "g",
            f"{text}, {database} team",
            (f"g.{database}.{name}",),
            databases=(database,),
        )
        for name, text in TEXTS.items()
    ]


class Recording(Bm25Candidates):
    """BM25 candidates that remember the scope every list was asked in."""

    def __init__(self, assets: list[TableAsset]) -> None:
        super().__init__(assets)
        self.asked: list[tuple[str, tuple[str, ...] | None]] = []

    def coarse(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> CoarseAnswer:
        self.asked.append((text, None if databases is None else tuple(databases)))
        return super().coarse(business, text, k, databases)

    def __call__(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> list[str]:
        self.asked.append((text, None if databases is None else tuple(databases)))
        return super().__call__(business, text, k, databases)


def test_hard_negatives_come_from_inside_the_scope() -> None:
    candidates = Bm25Candidates(ASSETS)
    pairs = build_pairs(requirements("sales"), list(LIBRARY), candidates, 2, 0, 6, seed=0)
    hard = [p for p in pairs if p.kind == "hard"]
    assert hard and all(LIBRARY[p.asset_id].database == "sales" for p in hard)
    unscoped = [LabelledRequirement(r.id, r.business, r.text, r.gold) for r in requirements("sales")]
    outside = [
        p for p in build_pairs(unscoped, list(LIBRARY), candidates, 2, 0, 6, seed=0) if p.kind == "hard"
    ]
    assert any(LIBRARY[p.asset_id].database == "billing" for p in outside)  # the namesakes, without a scope


def test_the_gate_judges_a_scoped_requirement_on_its_scoped_list() -> None:
    judged = judge(None, LIBRARY, requirements("billing"), Bm25Candidates(ASSETS), k=6)
    assert len(judged) == len(TEXTS)
    assert all(j.coarse.ids and {LIBRARY[a].database for a in j.coarse.ids} == {"billing"} for j in judged)


@pytest.mark.slow
def test_training_asks_every_scoped_requirement_in_its_scope(tmp_path: Path) -> None:
    reqs = requirements("sales") + requirements("billing")
    candidates = Recording(ASSETS)
    config = RankerConfig(
        max_length=32, batch_size=8, max_steps=1, eval_every=0, seed=1, device="cpu", candidate_k=6,
        hard_negatives=2, random_negatives=0, synthetic_per_table=0, target_modules=["query", "value"],
    )  # fmt: skip
    train_business("g", TrainingData("g", reqs, reqs[::2]), ASSETS, candidates, config, tmp_path / "a")
    scope = {r.text: r.databases for r in reqs}
    assert candidates.asked and {text for text, _ in candidates.asked} == set(scope)
    assert all(databases == scope[text] for text, databases in candidates.asked)


def test_bm25_candidates_drop_a_scope_the_business_no_longer_holds() -> None:
    candidates = Bm25Candidates(ASSETS)
    text = "total invoice amount"
    assert {LIBRARY[a].database for a in candidates("g", text, 6, ("sales", "gone"))} == {"sales"}
    assert candidates("g", text, 6, ("gone",)) == candidates("g", text, 6)


def test_a_changed_scope_is_new_training_data_and_no_scope_keeps_the_old_fingerprint() -> None:
    """`fingerprint` decides whether to retrain: a requirement asked in another scope is new data, and
    data without scopes hashes as it did before scopes existed."""
    import hashlib
    import json

    from assetmatch.training.pairs import fingerprint

    reqs = requirements("sales")
    moved = [LabelledRequirement(r.id, r.business, r.text, r.gold, databases=("billing",)) for r in reqs]
    assert fingerprint(reqs, ASSETS) != fingerprint(moved, ASSETS)
    unscoped = [LabelledRequirement(r.id, r.business, r.text, r.gold) for r in reqs]
    before = hashlib.sha256()
    for r in sorted(unscoped, key=lambda r: (r.id, r.text)):
        before.update(json.dumps([r.id, r.text, sorted(r.gold), r.query], ensure_ascii=False).encode("utf-8"))
    for a in sorted(ASSETS, key=lambda a: a.asset_id):
        before.update(a.asset_id.encode("utf-8"))
        before.update(a.content_hash().encode("utf-8"))
    assert fingerprint(unscoped, ASSETS) == before.hexdigest()
