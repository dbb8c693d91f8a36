"""An adapter's judging scores its lists side by side, one model per thread: every list once, in
order, each with its own latency; a scorer that fails fails the judging."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from assetmatch.training.train import score_side_by_side


def test_every_list_is_scored_once_in_order_each_scorer_in_a_thread_of_its_own() -> None:
    calls: list[tuple[int, str]] = []
    owner: dict[int, str] = {}

    def scorer(tag: int) -> Any:
        def score(text: str, n: int) -> list[float]:
            # a scorer (a model) is never called from two threads
            assert owner.setdefault(tag, threading.current_thread().name) == threading.current_thread().name
            calls.append((n, threading.current_thread().name))
            time.sleep(0.01 * (n % 3))  # lists take different times
            return [float(n), float(tag)]

        return score

    lists = [("q", n) for n in range(12)]
    scored = score_side_by_side([scorer(0), scorer(1)], lists)
    assert [logits[0] for logits, _ in scored] == [float(n) for n in range(12)]
    assert sorted(n for n, _ in calls) == list(range(12))  # each list once
    assert {logits[1] for logits, _ in scored} == {0.0, 1.0}  # both scorers took lists
    assert len({name for _, name in calls}) == 2
    assert all(ms >= 10 * (n % 3) for n, (_, ms) in enumerate(scored))  # each list's own time


def test_one_scorer_scores_in_the_callers_thread() -> None:
    names: list[str] = []
    scored = score_side_by_side(
        [lambda text, n: names.append(threading.current_thread().name) or [float(n)]], [("q", 1), ("q", 2)]
    )
    assert [logits for logits, _ in scored] == [[1.0], [2.0]]
    assert set(names) == {threading.current_thread().name}


def test_a_failing_scorer_fails_the_judging_and_the_others_stop() -> None:
    scored: list[int] = []

    def fine(text: str, n: int) -> list[float]:
        time.sleep(0.005)
        scored.append(n)
        return [0.0]

    def broken(text: str, n: int) -> list[float]:
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        score_side_by_side([fine, broken], [("q", n) for n in range(50)])
    assert len(scored) < 50  # the lists left were dropped, not scored by the other thread
