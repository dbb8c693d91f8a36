"""Feedback buffering into a real temp Delta lake: flush, failure, spool, replay."""

from __future__ import annotations

import asyncio
from pathlib import Path

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.serving.feedback import Answer, FeedbackWriter, RequestMemory, feedback_row

ANSWER = Answer("ga", "daily active users", ("ga.t1", "ga.t2"), "champion", "3")


def rows(n: int) -> list[dict[str, object]]:
    return [feedback_row(f"{i:032x}", ANSWER, ["ga.t1"]) for i in range(n)]


def test_rows_land_in_the_feedback_table(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")

    async def run() -> None:
        writer = FeedbackWriter(lake, flush_rows=2, flush_interval_s=60, spool_dir=tmp_path / "spool")
        await writer.start()
        for row in rows(3):
            writer.add(row)
        for _ in range(200):  # the flush loop wakes at 2 rows, without waiting for its interval
            if lake.read_arrow(T.FEEDBACK).num_rows >= 2:
                break
            await asyncio.sleep(0.1)
        assert lake.read_arrow(T.FEEDBACK).num_rows >= 2  # flushed long before the 60 s interval
        await writer.stop()  # the third row is flushed on stop

    asyncio.run(run())
    data = lake.read_arrow(T.FEEDBACK).to_pylist()
    assert len(data) == 3
    assert data[0]["returned_assets"] == ["ga.t1", "ga.t2"] and data[0]["used_assets"] == ["ga.t1"]
    assert data[0]["arm"] == "champion" and data[0]["model_version"] == "3"


def test_a_failed_flush_keeps_rows_and_stop_spools_them(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    spool = tmp_path / "spool"

    async def run() -> None:
        writer = FeedbackWriter(Lake(blocked), flush_rows=100, flush_interval_s=60, spool_dir=spool)
        await writer.start()
        for row in rows(4):
            writer.add(row)
        assert await writer.flush() == 0 and writer.pending == 4
        await writer.stop()

    asyncio.run(run())
    (spooled,) = spool.glob("feedback-*.jsonl")
    assert len(spooled.read_text().splitlines()) == 4

    good = Lake(tmp_path / "lake")
    assert asyncio.run(FeedbackWriter(good, spool_dir=spool).replay_spool()) == 4
    assert good.read_arrow(T.FEEDBACK).num_rows == 4
    assert not list(spool.glob("*.jsonl"))


def test_request_memory_is_bounded() -> None:
    memory = RequestMemory(2)
    for i in range(3):
        memory.put(str(i), ANSWER)
    assert memory.get("0") is None and memory.get("2") == ANSWER
