"""Training runs torch on `RankerConfig.threads` threads (0: one per core) and gives the caller's
setting back, so a process that caps its math libraries (serving, the demo) keeps its cap."""

from __future__ import annotations

import os

import pytest
import torch

from assetmatch.ranker_config import RankerConfig
from assetmatch.ranking.model import torch_threads


def test_threads_are_set_for_the_block_and_restored() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch_threads(0):
            assert torch.get_num_threads() == max(1, os.cpu_count() or 1)
        assert torch.get_num_threads() == 1
        with pytest.raises(RuntimeError), torch_threads(2):
            assert torch.get_num_threads() == 2
            raise RuntimeError("training failed")
        assert torch.get_num_threads() == 1  # restored on an error too
    finally:
        torch.set_num_threads(before)


def test_negative_threads_are_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        RankerConfig(threads=-1)


def test_judging_scores_as_many_lists_at_once_as_the_cores_hold_at_servings_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from assetmatch.ranking import model

    monkeypatch.setattr(model.os, "cpu_count", lambda: 2)
    assert model.lists_at_once("cpu", threads=1) == 2
    assert model.lists_at_once("cpu", threads=2) == 1
    assert model.lists_at_once("cpu", threads=3) == 1  # never none
    assert model.lists_at_once("cuda", threads=1) == 1  # a GPU runs one model call at a time
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert model.lists_at_once("cpu") == 2  # 0: torch's threads now
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(model.os, "cpu_count", lambda: 64)
    assert model.lists_at_once("cpu", threads=1) == model.MAX_LISTS_AT_ONCE  # each holds a model copy
