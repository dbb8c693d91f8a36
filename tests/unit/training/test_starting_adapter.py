"""The starting adapter: pre-trained on a benchmark's `train` split only, resolved by
`training.starting_adapter`, and what a business's first adapter starts from."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import LoraFineRanker
from assetmatch.training import starting
from assetmatch.training.pairs import LabelledRequirement, TrainingData
from assetmatch.training.train import train_business

TABLES = {
    "shop": {"orders": "orders placed by customers", "products": "products and prices"},
    "school": {"students": "students and their ages", "courses": "courses taught"},
    "hidden": {"secrets": "a database only the dev split asks about"},
}
QUESTIONS = [
    ("shop", "How many orders were placed?", ["orders"], "train"),
    ("shop", "List products cheaper than 10", ["products"], "train"),
    ("shop", "Which products were ordered most?", ["orders", "products"], "train"),
    ("school", "How old is the oldest student?", ["students"], "train"),
    ("school", "Name every course", ["courses"], "train"),
    ("hidden", "What secrets are there?", ["secrets"], "dev"),
    ("shop", "Count products", ["products"], "test"),
]


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "assets.jsonl.gz", "wt", encoding="utf-8") as f:
        for db, tables in TABLES.items():
            for name, comment in tables.items():
                row = {
                    "asset_id": f"{db}.{name}",
                    "business": db,
                    "database": db,
                    "table": name,
                    "table_comment": comment,
                    "columns": [{"name": "id", "type": "int", "comment": "id", "primary_key": True}],
                }
                f.write(json.dumps(row) + "\n")
    with gzip.open(folder / "requirements.jsonl.gz", "wt", encoding="utf-8") as f:
        for i, (db, text, gold, split) in enumerate(QUESTIONS):
            row = {
                "id": f"q{i}",
                "business": db,
                "text": text,
                "gold_assets": [f"{db}.{t}" for t in gold],
                "split": split,
            }
            f.write(json.dumps(row) + "\n")
    return folder


def test_read_dataset_takes_the_train_split_and_only_its_databases(tmp_path: Path) -> None:
    assets, requirements = starting.read_dataset(write_dataset(tmp_path / "bench"))
    assert {r.text for r in requirements} == {q[1] for q in QUESTIONS if q[3] == "train"}
    assert {a.business for a in assets} == {"shop", "school"}  # the dev-only database is never read


def test_hard_negatives_alternate_the_own_database_with_the_others(tmp_path: Path) -> None:
    from assetmatch.ranking.candidates import Bm25Candidates

    assets, _ = starting.read_dataset(write_dataset(tmp_path / "bench"))
    library = {a.asset_id: a for a in assets}
    own = Bm25Candidates(assets)
    assert starting.hard_negative_source(own, library, other_databases=False) is own
    mixed = starting.hard_negative_source(own, library, other_databases=True)
    ids = mixed("shop", "How old is the oldest student?", 4)
    # own database first, then the best table of the others, alternately; never a duplicate
    assert ids[0].startswith("shop.") and ids[1] == "school.students"
    assert {i.split(".")[0] for i in ids} == {"shop", "school"} and len(set(ids)) == len(ids) == 4


def test_read_dataset_refuses_a_folder_that_is_not_a_benchmark(tmp_path: Path) -> None:
    (tmp_path / "assets.jsonl.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(FileNotFoundError, match=r"requirements\.jsonl\.gz is missing"):
        starting.read_dataset(tmp_path)


def test_resolve_starting_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert starting.resolve_starting_adapter("none", "any-base") is None
    with pytest.raises(ValueError, match="not an adapter folder"):
        starting.resolve_starting_adapter(str(tmp_path), "any-base")
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    (packaged / "adapter_config.json").write_text("{}", encoding="utf-8")
    RankerConfig(base="base-a").save(packaged)
    monkeypatch.setattr(starting, "PACKAGED_DIR", packaged)
    assert starting.resolve_starting_adapter("packaged", "base-a") == packaged
    assert starting.resolve_starting_adapter("packaged", "base-b") is None  # another base: fresh adapter
    assert starting.resolve_starting_adapter(str(packaged), "base-b") == packaged  # a folder: as asked
    monkeypatch.setattr(starting, "PACKAGED_DIR", tmp_path / "not-installed")
    assert starting.resolve_starting_adapter("packaged", "base-a") is None


@pytest.mark.slow
def test_pretrained_adapter_is_saved_with_provenance_and_a_business_starts_from_it(tmp_path: Path) -> None:
    config = RankerConfig(
        max_length=32, batch_size=8, max_steps=3, eval_every=0, device="cpu", candidate_k=2,
        hard_negatives=1, random_negatives=1, target_modules=["query", "value"], seed=3,
    )  # fmt: skip
    out = tmp_path / "starting"
    provenance = starting.pretrain([write_dataset(tmp_path / "bench")], out, config)
    assert provenance["steps"] == 3 and provenance["requirements"] == 5 and provenance["databases"] == 2
    assert provenance["base"] == config.base  # which base the adapter fits, beside its command
    assert json.loads((out / starting.PROVENANCE_FILE).read_text())["data"][0]["licence"] == "CC BY-SA 4.0"
    assert RankerConfig.load(out).max_length == 32

    # a business's adapter initialised from it scores like it before training (lr ~ 0, one step)
    from assetmatch.models import Column, TableAsset
    from assetmatch.ranking.candidates import Bm25Candidates

    assets = [
        TableAsset(business="g", database="g", name=n, comment=c, columns=[Column(name="id")])
        for n, c in (("orders", "orders placed"), ("users", "registered users"))
    ]
    reqs = [
        LabelledRequirement(f"r{i}", "g", t, (assets[i % 2].asset_id,))
        for i, t in enumerate(["orders", "users"] * 2)
    ]
    business = train_business(
        "g",
        TrainingData("g", reqs, reqs[:2]),
        assets,
        Bm25Candidates(assets),
        RankerConfig(**{**config.to_dict(), "max_steps": 1, "learning_rate": 1e-9, "warmup_ratio": 0.0}),
        tmp_path / "g",
        init_from=out,
    )
    ranker = LoraFineRanker.from_folders(
        {"start": (out, "s"), "business": (business.adapter_dir, "b")}, config.base, "cpu", 32
    )
    a = ranker.logits("start", "orders placed", assets)
    b = ranker.logits("business", "orders placed", assets)
    assert a == pytest.approx(b, abs=1e-4)


def test_pretraining_leaves_out_what_a_benchmark_holds_out_for_validation(tmp_path: Path) -> None:
    """`hold_out`: the questions a training with that validation fraction would calibrate on are not
    learned (as `split_holdout` decides: by query where known, else by text), so an adapter started
    from it has not seen them, and its provenance says which rule chose them."""
    from assetmatch.training.pairs import split_holdout

    _, questions = starting.read_dataset(write_dataset(tmp_path / "bench"))
    kept, held = split_holdout(questions, 0.5)
    assert kept and held  # the fixture puts questions on both sides
    config = RankerConfig(
        max_length=32, batch_size=8, max_steps=1, eval_every=0, device="cpu", candidate_k=2,
        hard_negatives=1, random_negatives=0, target_modules=["query"], seed=3, lora_dropout=0.0,
    )  # fmt: skip
    provenance = starting.pretrain([tmp_path / "bench"], tmp_path / "out", config, hold_out=0.5)
    assert provenance["requirements"] == len(kept) and provenance["held_out"] == 0.5
    assert provenance["held_out_by"] == starting.HOLDOUT_KEY
    assert "--hold-out 0.5" in provenance["command"] and "--lora-dropout 0.0" in provenance["command"]
