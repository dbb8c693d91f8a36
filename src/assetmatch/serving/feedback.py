"""Feedback: remember recent answers, and land callers' "tables I really used" in the lake.

`RequestMemory` keeps the last N answers (business, requirement, selected and shown tables, arm,
model version) so a `POST /v1/feedback` carrying only a request id can be joined to what was
served and checked against it (`check_used_assets`), and records the feedback given per request
so the same feedback twice is stored once.
`FeedbackWriter` buffers rows and appends them to the `feedback` Delta table in one commit per
flush (every `flush_rows` rows or `flush_interval_s` seconds, and on shutdown). A failed append
keeps the rows buffered for the next flush; if the final flush on shutdown fails, the rows are
written to a local JSONL spool file, which the next start appends before anything else. Nothing
accepted is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.serving.metrics import ServingMetrics
from assetmatch.serving.periodic import cancel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """What was served for one request id."""

    business: str
    requirement: str
    returned_assets: tuple[str, ...]  # the selected set
    arm: str
    model_version: str
    shown_assets: tuple[str, ...] = ()  # every table of the answer (ranked list), selected or not
    databases: tuple[str, ...] | None = None  # the request's scope (None: the whole library)


Claim = Literal["new", "duplicate", "conflict"]


class RequestMemory:
    """Bounded, thread-safe map request_id -> Answer (oldest forgotten first).

    Per process: a replica only knows its own answers; behind a load balancer, feedback must go
    to the replica that answered (sticky sessions) or the window is per replica.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, Answer] = OrderedDict()
        self._given: dict[str, frozenset[str]] = {}  # request_id -> used assets already recorded
        self._lock = threading.Lock()

    def put(self, request_id: str, answer: Answer) -> None:
        with self._lock:
            self._data[request_id] = answer
            while len(self._data) > self.size:
                old, _ = self._data.popitem(last=False)
                self._given.pop(old, None)

    def get(self, request_id: str) -> Answer | None:
        with self._lock:
            return self._data.get(request_id)

    def claim_feedback(self, request_id: str, used: frozenset[str]) -> Claim:
        """Record that feedback `used` was given for `request_id`, once: 'new' the first time,
        'duplicate' for the same set again, 'conflict' for a different set (the first one stands)."""
        with self._lock:
            given = self._given.get(request_id)
            if given is None:
                self._given[request_id] = used
                return "new"
            return "duplicate" if given == used else "conflict"


class UsedAssetsRefused(ValueError):
    """Used asset ids the answering business cannot see (another tenant's, or unknown)."""

    def __init__(self, business: str, refused: list[str]) -> None:
        shown = ", ".join(repr(a) for a in refused[:3]) + (" ..." if len(refused) > 3 else "")
        super().__init__(
            f"{len(refused)} used asset id(s) are neither in the answer nor tables of business "
            f"{business!r} or a shared library: {shown}"
        )
        self.refused = refused


def check_used_assets(
    answer: Answer, used: list[str], visible: Callable[[str], bool] | None = None
) -> list[str]:
    """The used ids, deduplicated in order, if each was in the answer or is a table `visible` to the
    answer's business (its own or a shared library's; None: only the answer counts). Raises
    UsedAssetsRefused naming the others: unknown ids and other tenants' tables are refused alike,
    so the answer reveals nothing about another business's tables."""
    out = list(dict.fromkeys(used))
    allowed = set(answer.shown_assets) | set(answer.returned_assets)
    refused = [a for a in out if a not in allowed and (visible is None or not visible(a))]
    if refused:
        raise UsedAssetsRefused(answer.business, refused)
    return out


def feedback_row(request_id: str, answer: Answer, used_assets: list[str]) -> dict[str, Any]:
    """One row of the `feedback` table (schema `lake.tables.SCHEMAS['feedback']`)."""
    return {
        "request_id": request_id,
        "business": answer.business,
        "requirement": answer.requirement,
        "returned_assets": list(answer.returned_assets),
        "used_assets": list(used_assets),
        "arm": answer.arm,
        "model_version": answer.model_version,
        "ts": datetime.now(UTC),
        # training asks the request again in its scope: the list it learns from is the one served
        "databases": None if answer.databases is None else list(answer.databases),
    }


class FeedbackWriter:
    """Buffer + periodic flush into the `feedback` Delta table."""

    def __init__(
        self,
        lake: Lake,
        flush_rows: int = 100,
        flush_interval_s: float = 5.0,
        spool_dir: str | Path = ".assetmatch/serving/feedback-spool",
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.lake = lake
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.spool_dir = Path(spool_dir).resolve()  # absolute: a later chdir does not move it
        self.metrics = metrics
        self._buffer: list[dict[str, Any]] = []
        self._failed: set[str] = set()  # request ids of buffered rows whose failure was counted
        self._lock = threading.Lock()
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._buffer.append(row)
            full = len(self._buffer) >= self.flush_rows
        if self.metrics:
            self.metrics.feedback_rows.labels("accepted").inc()
        if full:
            self._wake.set()

    async def flush(self) -> int:
        """Append everything buffered in one commit; on failure keep it buffered. Returns rows written."""
        async with self._flush_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                await asyncio.to_thread(
                    self.lake.append, T.FEEDBACK, rows, f"serving-{uuid.uuid4().hex[:12]}"
                )
            except Exception as exc:
                with self._lock:
                    self._buffer[:0] = rows
                    first_failures = [r for r in rows if r["request_id"] not in self._failed]
                    self._failed.update(r["request_id"] for r in first_failures)
                if self.metrics:
                    # a row is counted once however many flushes it waits through
                    self.metrics.feedback_rows.labels("flush_failed").inc(len(first_failures))
                    self.metrics.errors.labels("feedback_flush").inc()
                log.warning("feedback flush of %d rows failed (kept buffered): %s", len(rows), exc)
                return 0
            with self._lock:
                self._failed.difference_update(r["request_id"] for r in rows)
            if self.metrics:
                self.metrics.feedback_rows.labels("written").inc(len(rows))
            return len(rows)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def start(self) -> None:
        await self.replay_spool()
        self._task = asyncio.create_task(self._loop(), name="assetmatch-feedback-flush")

    async def stop(self) -> None:
        """Final flush; what still cannot be written goes to the spool file."""
        await cancel(self._task)
        self._task = None
        await self.flush()
        with self._lock:
            rows, self._buffer = self._buffer, []
            self._failed.clear()
        if rows:
            self._spool(rows)
            if self.metrics:
                self.metrics.feedback_rows.labels("spooled").inc(len(rows))

    def _spool(self, rows: list[dict[str, Any]]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"feedback-{uuid.uuid4().hex}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({**row, "ts": row["ts"].isoformat()}, ensure_ascii=False) + "\n")
        log.error("could not write %d feedback rows to the lake; spooled to %s", len(rows), path)

    async def replay_spool(self) -> int:
        """Append spooled rows from an earlier shutdown; a file is removed only once written."""
        if not self.spool_dir.is_dir():
            return 0
        written = 0
        for path in sorted(self.spool_dir.glob("feedback-*.jsonl")):
            rows = [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
            for row in rows:
                row["ts"] = datetime.fromisoformat(row["ts"])
            try:
                await asyncio.to_thread(
                    self.lake.append, T.FEEDBACK, rows, f"serving-spool-{path.stem[-12:]}"
                )
            except Exception as exc:
                log.warning("spooled feedback %s still cannot be written: %s", path, exc)
                continue
            path.unlink()
            written += len(rows)
        return written
