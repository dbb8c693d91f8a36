"""Graceful overload: over its wait budget or past the client's deadline, the fine ranker is not
queued for; the coarse ranking answers with degraded=true, counted in /metrics, never cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import Settings
from assetmatch.matching.types import FineRankerBusy
from assetmatch.serving.batching import (
    BatchedFineRanker,
    FineBudget,
    MicroBatcher,
    parse_deadline_header,
    request_budget,
    run_within,
)
from assetmatch.serving.state import ModelRef

ALL = {"X-API-Key": "key-all"}
DOC = "table dws_user_active_1d: daily active users | columns: user_id, active_days"


def test_budget_refuses_over_the_wait_budget_or_past_the_deadline() -> None:
    assert FineBudget().refusal(100.0, 1.0) is None  # no budget: always queue
    over = FineBudget(max_wait_s=0.5).refusal(0.6, 0.1)
    assert over is not None and over.startswith("queue:")
    assert FineBudget(max_wait_s=0.5).refusal(0.4, 0.1) is None
    soon = FineBudget(deadline=time.monotonic() + 0.2)
    late = soon.refusal(0.15, 0.1)  # 150 ms waiting + 100 ms scoring > 200 ms left
    assert late is not None and late.startswith("deadline:")
    assert soon.refusal(0.0, 0.05) is None
    assert request_budget(0).max_wait_s is None and request_budget(250).max_wait_s == 0.25
    assert request_budget(0, 100, started=10.0).deadline == pytest.approx(10.1)


@pytest.mark.parametrize("bad", ["soon", "-5", "0", "nan", "1e12"])
def test_a_bad_deadline_header_is_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="X-Request-Deadline-Ms"):
        parse_deadline_header(bad)
    assert parse_deadline_header(None) is None and parse_deadline_header("250") == 250.0


def test_a_busy_queue_sheds_instead_of_queueing(scorer: Any, adapter_folders: dict[str, Path]) -> None:
    """While a big batch is being scored, a request under a tight budget is refused at once; one
    without a budget queues behind it and gets its scores."""
    scorer.load_adapter("ga@1", adapter_folders["a"])
    ranker_models = {"ga": ModelRef("ga", "champion", "1", "")}

    async def run() -> tuple[float, BaseException | None, list[float]]:
        batcher = MicroBatcher(max_batch_size=4, max_wait_ms=1)
        await batcher.start()
        try:
            ranker = BatchedFineRanker(batcher, scorer, ranker_models)
            await batcher.score(scorer, [("ga@1", "warm up", DOC)])  # one measured batch
            big = asyncio.create_task(batcher.score(scorer, [("ga@1", f"req {i}", DOC) for i in range(400)]))
            while not batcher.running_jobs:
                await asyncio.sleep(0.001)
            wait = batcher.expected_wait_s()
            tight = FineBudget(max_wait_s=1e-6)
            refused: BaseException | None = None
            try:
                await asyncio.to_thread(run_within, tight, _logits, ranker)
            except FineRankerBusy as exc:
                refused = exc
            queued = await asyncio.to_thread(run_within, None, _logits, ranker)
            await big
            return wait, refused, queued
        finally:
            await batcher.stop()

    try:
        wait, refused, queued = asyncio.run(run())
    finally:
        scorer.unload_adapter("ga@1")
    assert wait > 0
    assert isinstance(refused, FineRankerBusy) and str(refused).startswith("queue:")
    assert len(queued) == 1


def _logits(ranker: BatchedFineRanker) -> list[float]:
    from assetmatch.models import Column, TableAsset

    table = TableAsset(
        business="ga",
        database="d",
        name="dws_user_active_1d",
        columns=[Column(name="user_id", type="bigint")],
    )
    return ranker.logits("ga", "daily active users", [table])


class FolderModels:
    """Champion adapters from local folders (what `ModelSource` asks: versions and a folder)."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    def versions(self, businesses: Sequence[str]) -> dict[tuple[str, str], str]:
        return {(b, "champion"): "1" for b in businesses if b in self.folders}

    def fetch(self, business: str, arm: str, version: str) -> str:
        return str(self.folders[business])


@pytest.fixture
def fine_client(
    deployment: Settings, scorer: Any, adapter_folders: dict[str, Path], tmp_path: Path
) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    app = create_app(
        deployment,
        model_source=FolderModels({"ga": adapter_folders["a"], "gb": adapter_folders["b"]}),
        scorer=scorer,
        spool_dir=str(tmp_path / "spool"),
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_deadline_that_cannot_be_met_answers_coarse_and_degraded(fine_client: Any) -> None:
    text = "weekly payment amount per channel"
    fine = fine_client.post("/v1/match", json={"business": "ga", "requirement": text}, headers=ALL).json()
    assert fine["fine_depth"] > 0 and fine["degraded"] is False and fine["model_version"] == "1"

    body = {"business": "ga", "requirement": f"{text} today", "deadline_ms": 1}
    rushed = fine_client.post("/v1/match", json=body, headers=ALL)
    assert rushed.status_code == 200, rushed.text
    answer = rushed.json()
    assert answer["degraded"] is True and answer["fine_depth"] == 0
    assert answer["fine_skipped"].startswith("overloaded (deadline:") and answer["tables"]
    assert all(t["fine_score"] is None for t in answer["tables"])

    header = {**ALL, "X-Request-Deadline-Ms": "1"}
    by_header = fine_client.post("/v1/match", json={"business": "gb", "requirement": text}, headers=header)
    assert by_header.status_code == 200 and by_header.json()["degraded"] is True

    again = fine_client.post(
        "/v1/match", json={"business": "ga", "requirement": f"{text} today"}, headers=ALL
    )
    assert again.json()["cached"] is False and again.json()["degraded"] is False  # never cached

    metrics = fine_client.get("/metrics").text
    assert 'assetmatch_degraded_total{business="ga",reason="deadline"} 1.0' in metrics
    assert 'assetmatch_degraded_total{business="gb",reason="deadline"} 1.0' in metrics

    bad = fine_client.post(
        "/v1/match",
        json={"business": "ga", "requirement": text},
        headers={**ALL, "X-Request-Deadline-Ms": "soon"},
    )
    assert bad.status_code == 422 and "X-Request-Deadline-Ms" in bad.text
    zero = fine_client.post(
        "/v1/match", json={"business": "ga", "requirement": text, "deadline_ms": 0}, headers=ALL
    )
    assert zero.status_code == 422
