"""`training.recorded`: what training scored is kept with the adapter, and taken instead of scoring
a list again only where the weights, the inputs and the runtime are the same."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from assetmatch.matching.fine import CoarseAnswer
from assetmatch.models import Column, TableAsset
from assetmatch.training import evaluate as ev
from assetmatch.training import recorded as rec
from assetmatch.training.pairs import LabelledRequirement

TABLES = [
    TableAsset(business="g", database="g", name=n, comment=c, columns=[Column(name="dt")])
    for n, c in (("dws_pay", "paying users"), ("dws_active", "active users"), ("dim_item", "items"))
]
RUNTIME = rec.Runtime("host-a", "cpu", "int8", 1, 2)


def key(**changes: object) -> str:
    values: dict[str, object] = {
        "text": "revenue of paying users",
        "assets": TABLES,
        "examples": {TABLES[0].asset_id: "paying users last week"},
        "siblings": {TABLES[0].asset_id: ("dws_active",)},
    }
    values.update(changes)
    return rec.list_key(**values)  # type: ignore[arg-type]


def test_a_list_key_changes_with_everything_the_ranker_reads() -> None:
    first = key()
    assert key() == first
    renamed = [TABLES[0].model_copy(update={"comment": "paying players"}), *TABLES[1:]]
    for changed in (
        key(text="revenue of paying players"),
        key(assets=renamed),
        key(assets=list(reversed(TABLES))),
        key(examples={}),
        key(siblings={TABLES[0].asset_id: ("dws_active", "dim_item")}),
    ):
        assert changed != first


def adapter_folder(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_model.safetensors").write_bytes(weights)
    (root / "adapter_config.json").write_text('{"r": 8}', encoding="utf-8")
    (root / "ranker_config.json").write_text('{"max_length": 64}', encoding="utf-8")
    return root


def judged(keys: list[str]) -> list[ev.Judged]:
    coarse = CoarseAnswer([t.asset_id for t in TABLES], [0.9, 0.5, 0.1], [TABLES[0].asset_id])
    requirement = LabelledRequirement("r", "g", "q", (TABLES[0].asset_id,))
    return [
        ev.Judged(requirement, coarse, [1.0, -1.0, float(i)], 12.5 + i, 0.5, k) for i, k in enumerate(keys)
    ]


def test_a_record_stands_only_for_its_own_weights_and_runtime(tmp_path: Path) -> None:
    folder = adapter_folder(tmp_path / "a", b"weights-1")
    assert rec.recorded(folder, RUNTIME) == {}  # nothing recorded yet
    lists = [*judged(["k1", "k2"]), replace(judged(["x"])[0], key="")]  # a coarse-only list has no key
    rec.record(folder, lists, RUNTIME, rec.adapter_digest(folder))
    assert rec.recorded(folder, RUNTIME) == {"k1": ([1.0, -1.0, 0.0], 12.5), "k2": ([1.0, -1.0, 1.0], 13.5)}
    # what decides the scores beside the adapter folder (calibration, reports) may be written later
    (folder / "calibration.json").write_text("{}", encoding="utf-8")
    assert set(rec.recorded(folder, RUNTIME)) == {"k1", "k2"}
    for other in (
        replace(RUNTIME, threads=2),
        replace(RUNTIME, side_by_side=1),  # each list's latency measured alone
        replace(RUNTIME, precision="none"),
        replace(RUNTIME, host="host-b"),
    ):
        assert rec.recorded(folder, other) == {}
    (folder / "ranker_config.json").write_text('{"max_length": 96}', encoding="utf-8")
    assert rec.recorded(folder, RUNTIME) == {}  # another token budget: other scores
    other = adapter_folder(tmp_path / "b", b"weights-2")
    rec.record(other, judged(["k1"]), RUNTIME, rec.adapter_digest(folder))  # a digest of other weights
    assert rec.recorded(other, RUNTIME) == {}


@pytest.mark.parametrize("broken", ["{not json", '{"format": 1, "adapter": "x"', "[1, 2]", "DIGEST"])
def test_an_unreadable_record_is_scored_again_not_an_error(
    tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = adapter_folder(tmp_path / "a", b"weights")
    digest = rec.adapter_digest(folder)
    text = (
        f'{{"format": {rec.FORMAT}, "adapter": "{digest}", "runtime": {json.dumps(asdict(RUNTIME))}, "lists": {{"k": 3}}}}'
        if broken == "DIGEST"  # the right weights and runtime, a list entry of the wrong shape
        else broken
    )
    (folder / rec.SCORES_FILE).write_text(text, encoding="utf-8")
    assert rec.recorded(folder, RUNTIME) == {}
    assert "unreadable scores record" in caplog.text
