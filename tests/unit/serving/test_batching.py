"""The micro-batcher over a real MiniLM with three untrained LoRA adapters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from assetmatch.serving.batching import BatcherClosed, MicroBatcher
from assetmatch.serving.metrics import ServingMetrics

REQUIREMENTS = ["daily active users by channel", "payment amount per order", "item purchases last week"]
DOCUMENTS = [
    "table dws_user_active_1d: daily active users | columns: user_id, active_days",
    "table dwd_pay_order_di: payment orders | columns: order_id, user_id, pay_amount (支付金额)",
    "table dim_item: game items | columns: item_id, item_name",
]


def rows_for(adapter: str, i: int) -> list[tuple[str, str, str]]:
    return [(adapter, REQUIREMENTS[i % 3], doc) for doc in DOCUMENTS]


def alone(scorer: Any, rows: list[tuple[str, str, str]]) -> list[float]:
    return [scorer.score_rows([row])[0] for row in rows]


@pytest.mark.parametrize("mode", ["mixed", "serial"])
def test_mixed_business_batches_match_each_row_alone(scorer: Any, mode: str) -> None:
    requests = [rows_for(adapter, i) for i, adapter in enumerate(["a", "b", "c", "a", "c", "b"])]
    metrics = ServingMetrics()

    async def run() -> tuple[list[list[float]], int]:
        batcher = MicroBatcher(max_batch_size=16, max_wait_ms=200, mode=mode, metrics=metrics)  # type: ignore[arg-type]
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.score(scorer, rows) for rows in requests))
        finally:
            await batcher.stop()
        return list(results), batcher.batches

    results, batches = asyncio.run(run())
    assert batches < len(requests)  # requests really were grouped
    for rows, got in zip(requests, results):
        assert got == pytest.approx(alone(scorer, rows), abs=1e-4)
    # the adapters differ, so a row scored through the wrong adapter would show
    assert alone(scorer, rows_for("a", 0)) != pytest.approx(alone(scorer, rows_for("b", 0)), abs=1e-4)
    assert b"assetmatch_batch_adapters_count" in metrics.render()


def test_stop_drains_queued_work_then_refuses(scorer: Any) -> None:
    async def run() -> list[list[float]]:
        batcher = MicroBatcher(max_batch_size=2, max_wait_ms=1, mode="mixed")
        await batcher.start()
        tasks = [asyncio.create_task(batcher.score(scorer, rows_for("a", i))) for i in range(5)]
        await asyncio.sleep(0)  # let them enqueue
        await batcher.stop()
        with pytest.raises(BatcherClosed):
            await batcher.score(scorer, rows_for("a", 0))
        return [t.result() for t in tasks]

    results = asyncio.run(run())
    assert len(results) == 5 and all(len(r) == 3 for r in results)


def test_a_failing_batch_fails_its_callers_only(scorer: Any) -> None:
    async def run() -> tuple[BaseException | list[float], list[float]]:
        batcher = MicroBatcher(max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        try:
            bad = await asyncio.gather(batcher.score(scorer, [("nope", "x", "y")]), return_exceptions=True)
            good = await batcher.score(scorer, rows_for("b", 1))
        finally:
            await batcher.stop()
        return bad[0], good

    bad, good = asyncio.run(run())
    assert isinstance(bad, KeyError) and "nope" in str(bad)
    assert good == pytest.approx(alone(scorer, rows_for("b", 1)), abs=1e-4)


def test_threadsafe_scoring_from_worker_threads(scorer: Any) -> None:
    async def run() -> list[list[float]]:
        batcher = MicroBatcher(max_batch_size=8, max_wait_ms=20)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="event-loop thread"):
                batcher.score_threadsafe(scorer, rows_for("a", 0))
            return list(
                await asyncio.gather(
                    *(asyncio.to_thread(batcher.score_threadsafe, scorer, rows_for(n, 2)) for n in "abc")
                )
            )
        finally:
            await batcher.stop()

    for name, got in zip("abc", asyncio.run(run())):
        assert got == pytest.approx(alone(scorer, rows_for(name, 2)), abs=1e-4)
