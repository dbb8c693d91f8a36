"""The micro-batcher over a real MiniLM with three untrained LoRA adapters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from assetmatch.serving.batching import BatcherClosed, MicroBatcher, model_threads
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


class ThreadsSeen:
    """The real scorer, noting the torch threads each batch ran on (in the model thread)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.adapters, self.seen = scorer, scorer.adapters, []

    def score_rows_serial(self, rows: Any) -> list[float]:
        import torch

        self.seen.append(torch.get_num_threads())
        return list(self.scorer.score_rows_serial(rows))


def test_model_threads_rule() -> None:
    assert model_threads(0, 4, lambda: 0) is None  # torch's default threads: left alone
    assert model_threads(2, 2, lambda: 0) is None  # nothing to switch
    assert model_threads(2, 1, lambda: 0) is None
    assert model_threads(1, 0, lambda: 0) is None  # the default: never switch
    computing = [3]
    rule = model_threads(1, 4, lambda: computing[0])
    assert rule is not None
    assert rule.for_batch(3) == 4  # every request computing waits on this batch
    assert rule.for_batch(2) == 1  # one computes beside it
    computing[0] = 1
    assert rule.for_batch(1) == 4


def test_a_batch_nothing_runs_beside_takes_more_threads_with_the_same_scores(scorer: Any) -> None:
    import torch

    seen = ThreadsSeen(scorer)
    computing = [1]

    async def run() -> tuple[list[float], list[float], int]:
        threads = model_threads(1, 3, lambda: computing[0])
        batcher = MicroBatcher(max_batch_size=8, max_wait_ms=0, mode="serial", threads=threads)
        await batcher.start()
        try:
            await batcher.run_in_model_thread(torch.set_num_threads, 1)  # serving.torch_threads at start-up
            alone_scores = await batcher.score(seen, rows_for("a", 0))  # the only request computing
            computing[0] = 4  # three more requests compute their coarse answers beside the next batch
            shared_scores = await batcher.score(seen, rows_for("a", 0))
            after = await batcher.run_in_model_thread(torch.get_num_threads)
        finally:
            await batcher.stop()
        return alone_scores, shared_scores, after

    alone_scores, shared_scores, after = asyncio.run(run())
    assert seen.seen == [3, 1]
    assert after == 1  # the model thread is back on serving's threads after a batch alone
    assert alone_scores == pytest.approx(shared_scores, abs=1e-5)
    assert alone_scores == pytest.approx(alone(scorer, rows_for("a", 0)), abs=1e-4)
