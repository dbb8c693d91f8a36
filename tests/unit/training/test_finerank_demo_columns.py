"""The diagnosis columns of `benchmarks/finerank_demo.py` on constructed lists: whose top table is
right where the coarse ranking and the adapter disagree, and where the fine answer's set F1 moves."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from assetmatch.matching.fine import CoarseAnswer
from assetmatch.training.evaluate import Judged, Ranked
from assetmatch.training.pairs import LabelledRequirement

REPO_ROOT = Path(__file__).resolve().parents[3]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "finerank_demo", REPO_ROOT / "benchmarks" / "finerank_demo.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _script()


def _judged(rid: str, gold: tuple[str, ...], ids: list[str], logits: list[float]) -> Judged:
    requirement = LabelledRequirement(rid, "b", "text", gold)
    coarse = CoarseAnswer(ids, [0.9 - 0.1 * i for i in range(len(ids))], ids[:1])
    return Judged(requirement, coarse, logits, 1.0)


def test_top1_disagreements_count_who_is_right() -> None:
    lists = [
        _judged("a", ("t2",), ["t1", "t2", "t3"], [0.0, 2.0, -1.0]),  # only the adapter right
        _judged("b", ("t1",), ["t1", "t2", "t3"], [0.0, 2.0, -1.0]),  # only the coarse ranking right
        _judged("c", ("t1",), ["t1", "t2", "t3"], [3.0, 2.0, -1.0]),  # both right
        _judged("d", ("t3",), ["t1", "t2", "t3"], [0.0, 2.0, -1.0]),  # neither
    ]
    assert demo.top1_disagreements(lists) == (1, 1)


def test_where_it_differs_splits_by_the_top_table() -> None:
    lists = [
        _judged("a", ("t2",), ["t1", "t2", "t3"], [0.0, 2.0, -1.0]),
        _judged("b", ("t1",), ["t1", "t2", "t3"], [3.0, 2.0, -1.0]),
        _judged("c", ("t1",), ["t1", "t2", "t3"], [3.0, 2.0, -1.0]),
        _judged("d", ("t1",), ["t1", "t2", "t3"], [3.0, 2.0, -1.0]),
    ]
    fine = [
        Ranked(lists[0].requirement, ["t2", "t1", "t3"], None, 0.0, selected=["t2"]),  # top changed: 0 -> 1
        Ranked(
            lists[1].requirement, ["t1", "t2", "t3"], None, 0.0, selected=["t1", "t2"]
        ),  # top kept: 1 -> 2/3
        Ranked(lists[2].requirement, ["t1", "t2", "t3"], None, 0.0, selected=["t1"]),  # unchanged
        Ranked(
            lists[3].requirement, ["t1", "t3", "t2"], None, 0.0, selected=["t1", "t3"]
        ),  # top kept: 1 -> 2/3
    ]
    coarse_f1 = [0.0, 1.0, 1.0, 1.0]
    fine_f1 = [1.0, 2 / 3, 1.0, 2 / 3]
    assert demo.where_it_differs(lists, fine, coarse_f1, fine_f1) == "1: +1.00 / 2: -0.67"


def test_set_calls_judge_coarse_and_adapter_on_the_coarse_sets_decisions() -> None:
    # coarse scores 0.9, 0.8, 0.7, 0.6; the coarse set is each list's top table (`_judged`), so every
    # table below it was left out: gold t2 in list a, gold t3 in list b
    lists = [
        _judged("a", ("t1", "t2"), ["t1", "t2", "t3", "t4"], [5.0, 1.0, -1.0, 0.0]),
        _judged("b", ("t1", "t3"), ["t1", "t2", "t3", "t4"], [5.0, -1.0, 2.0, 0.0]),
    ]
    # left out, (gold, coarse, centred logit): a.t2 (y, .8, -.25), a.t3 (n, .7, -2.25),
    # a.t4 (n, .6, -1.25), b.t2 (n, .8, -2.5), b.t3 (y, .7, .5), b.t4 (n, .6, -1.5). The coarse
    # scores order 6 of the 8 (gold, other) pairs (ties count half); the adapter all 8.
    calls = demo.set_calls(lists)
    assert calls["left out"] == (0.75, 1.0, 2)
    assert calls["kept"][2] == 0  # nothing kept beside a top table
    # kept beside the top table: gold t2 and extra t3; the adapter puts the extra first, the coarse
    # scores do not
    kept = _judged("c", ("t1", "t2"), ["t1", "t2", "t3", "t4"], [1.0, -1.0, 0.0, -2.0])
    kept.coarse.selected = ["t1", "t2", "t3"]
    assert demo.set_calls([kept])["kept"] == (1.0, 0.0, 1)
    assert demo.set_calls_text(calls).startswith("left out 0.75/1.00 (2) · kept ")
