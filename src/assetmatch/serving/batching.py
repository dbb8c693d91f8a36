"""Micro-batching: concurrent requests share one model forward pass, whatever their business.

Every request's fine-ranking rows `(adapter, requirement, document)` go into one asyncio queue.
A single worker takes the first waiting request, then keeps taking more until `max_batch_size`
requests or `max_wait_ms` have passed, and runs the scorer on all their rows in one thread (the
model is not thread-safe and torch already uses every core inside one call). Results go back to
each request's future in input order.

- mode "serial" (the default): `score_rows_serial`, one pass per adapter present in the batch; each
  adapter's rows pad only to their own longest row.
- mode "mixed": one `score_rows` call on a mixed scorer, i.e. one forward pass per micro-batch in
  which every row runs through its own LoRA adapter (PEFT `adapter_names`). Measured slower than
  serial on a 2-core CPU (fp32 0.71x, int8 0.78-0.86x) and on an H200 (bf16 0.87-0.92x):
  `benchmarks/multi_lora.py`.

`stop()` drains: everything queued before it is still scored, later calls get `BatcherClosed`.

Threads: serving keeps the model on few torch threads (`serving.torch_threads`; one on the demo's two
cores), so that the other requests' coarse work has the remaining cores. A batch that every request
being computed waits on has nothing beside it, and there those cores would idle: with
`serving.torch_threads_alone` set it runs on that many instead (`ModelThreads`). Off by default: the
rule looks at the batch's start, and at 2-4 requests in flight the next request often arrives while
such a batch runs and shares the cores with it (docs/ops.md).

Graceful overload: the batcher measures its per-batch service time (a moving average) and knows
its queue depth, so `expected_wait_s()` = batches ahead of a new request x service time. A
request answered under a `FineBudget` (the route sets one: `serving.fine_wait_budget_ms`, and the
client's deadline) does not queue when that wait exceeds its budget: `BatchedFineRanker.logits`
raises `FineRankerBusy` and the Matcher answers from the coarse ranking (`degraded`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from assetmatch.matching.fine import FineCalibration, read_calibration
from assetmatch.matching.types import FineRankerBusy
from assetmatch.models import TableAsset
from assetmatch.ranking.finerank import DocumentShows, LoraFineRanker, document_shows
from assetmatch.ranking.model import ScoreRow, torch_threads
from assetmatch.serving.metrics import ServingMetrics
from assetmatch.serving.state import ModelRef
from assetmatch.types import Siblings

log = logging.getLogger(__name__)

Row = tuple[str, str, str]  # (adapter name, requirement, table document)
Mode = Literal["mixed", "serial"]
T = TypeVar("T")


class RowScorer(Protocol):
    """What the batcher needs from a model: `assetmatch.ranking.model.MultiAdapterScorer` is one."""

    adapters: Mapping[str, Any]

    def score_rows(self, rows: Sequence[Any]) -> list[float]: ...

    def score_rows_serial(self, rows: Sequence[Any]) -> list[float]: ...


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work (answered 503)."""


class BatcherOverloaded(BatcherClosed):
    """The model queue is too far behind to answer in time (answered 503, like BatcherClosed)."""


@dataclass(frozen=True)
class FineBudget:
    """How long one request may wait for the fine ranker's queue.

    max_wait_s: the configured budget for the expected queue wait (None: no limit).
    deadline: `time.monotonic()` by which the client wants its answer (None: none asked).
    """

    max_wait_s: float | None = None
    deadline: float | None = None

    def refusal(self, expected_wait_s: float, service_s: float) -> str | None:
        """Why the fine ranker must not be queued for (None: queue). The kind comes first:
        "queue: ..." (over the configured budget) or "deadline: ..." (the client's)."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if expected_wait_s + service_s > left:
                return (
                    f"deadline: {max(left, 0) * 1000:.0f} ms left, the fine ranker needs about "
                    f"{(expected_wait_s + service_s) * 1000:.0f} ms"
                )
        if self.max_wait_s is not None and expected_wait_s > self.max_wait_s:
            return (
                f"queue: expected wait {expected_wait_s * 1000:.0f} ms is over the budget of "
                f"{self.max_wait_s * 1000:.0f} ms"
            )
        return None

    def timeout(self, default: float) -> float:
        """How long to wait for the queued scores: until the deadline, if one was asked."""
        if self.deadline is None:
            return default
        return max(0.0, min(default, self.deadline - time.monotonic()))


_budget: contextvars.ContextVar[FineBudget | None] = contextvars.ContextVar("fine_budget", default=None)


def request_budget(
    wait_budget_ms: float, deadline_ms: float | None = None, started: float | None = None
) -> FineBudget:
    """The budget of one request: the configured wait budget (0: none) and the client's deadline,
    counted from `started` (`time.monotonic()` when the request arrived)."""
    deadline = None
    if deadline_ms is not None:
        deadline = (started if started is not None else time.monotonic()) + deadline_ms / 1000.0
    return FineBudget(wait_budget_ms / 1000.0 if wait_budget_ms > 0 else None, deadline)


def parse_deadline_header(value: str | None) -> float | None:
    """`X-Request-Deadline-Ms`: a positive number of milliseconds; ValueError names what is wrong."""
    if value is None or not value.strip():
        return None
    try:
        ms = float(value)
    except ValueError:
        raise ValueError(
            f"X-Request-Deadline-Ms must be a number of milliseconds, not {value[:40]!r}"
        ) from None
    if not math.isfinite(ms) or ms <= 0 or ms > 3_600_000:
        raise ValueError("X-Request-Deadline-Ms must be between 0 and 3600000 milliseconds")
    return ms


def degraded_reason(fine_skipped: str) -> str:
    """The label of a degraded answer: "deadline" (the client's) or "queue" (the configured budget)."""
    return "deadline" if "deadline:" in fine_skipped else "queue"


def run_within(budget: FineBudget | None, fn: Callable[..., T], *args: Any) -> T:
    """Call `fn(*args)` with `budget` in force for every fine-ranking call it makes (in this thread)."""
    token = _budget.set(budget)
    try:
        return fn(*args)
    finally:
        _budget.reset(token)


@dataclass
class _Job:
    scorer: RowScorer
    rows: list[Row]
    future: asyncio.Future[list[float]]
    enqueued: float = field(default_factory=time.perf_counter)


_STOP = object()


@dataclass(frozen=True)
class ModelThreads:
    """How many torch threads a model batch runs on: `alone` when every request being computed now
    (`computing()`, the route's compute slots taken) is waiting on this batch, else `shared`.

    A request's coarse work runs before its fine-ranking batch, so at concurrency 1 the batch is the
    only work in the server; under load other requests' coarse work shares the cores with it. The
    overload rule's service time (`MicroBatcher.batch_seconds`) averages both kinds: as load rises
    the batches run shared and the average follows them within a few batches."""

    shared: int
    alone: int
    computing: Callable[[], int]

    def for_batch(self, requests: int) -> int:
        """Threads for a batch holding `requests` requests."""
        return self.alone if self.computing() <= requests else self.shared


def model_threads(shared: int, alone: int, computing: Callable[[], int]) -> ModelThreads | None:
    """The batcher's thread rule from `serving.torch_threads` (`shared`; 0: torch's default, left
    alone) and `serving.torch_threads_alone` (0: never switch); None when there is nothing to switch."""
    if shared <= 0 or alone <= shared:
        return None
    return ModelThreads(shared, alone, computing)


class MicroBatcher:
    """An asyncio queue plus one worker task that runs the model in a dedicated thread."""

    def __init__(
        self,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        mode: Mode = "serial",
        metrics: ServingMetrics | None = None,
        threads: ModelThreads | None = None,
    ) -> None:
        if max_batch_size <= 0:
            raise ValueError("max_batch_size must be > 0")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.mode: Mode = mode
        self.metrics = metrics
        self.threads = threads  # None: the model thread's torch threads are left as they are
        self._queue: asyncio.Queue[_Job | object] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.batches = 0
        self.batch_seconds: float | None = None  # moving average of one batch's service time
        self.running_jobs = 0  # requests in the batch being scored now

    SERVICE_SMOOTHING = 0.3  # weight of the newest batch in the moving average

    def expected_wait_s(self) -> float:
        """How long a request queued now would wait before its batch starts: the batch running
        plus the queued batches ahead of it, each at the measured service time (0 before any
        batch was measured)."""
        if self.batch_seconds is None or self._queue is None:
            return 0.0
        queued = self._queue.qsize()
        ahead = math.ceil(queued / self.max_batch_size) + (1 if self.running_jobs else 0)
        return ahead * self.batch_seconds

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="assetmatch-model"
        )
        self._closed = False
        self._worker = asyncio.create_task(self._run(), name="assetmatch-batcher")

    async def stop(self) -> None:
        """Refuse new work, finish everything already queued, then stop the worker and its thread."""
        if self._queue is None or self._closed:
            return
        self._closed = True
        await self._queue.put(_STOP)
        if self._worker is not None:
            await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done() and not self._closed

    async def run_in_model_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the model thread, between two batches (adapter loads must not race a forward)."""
        if self._executor is None or self._closed:
            raise BatcherClosed("the model batcher is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---- submitting ------------------------------------------------------------------------
    async def score(self, scorer: RowScorer, rows: Sequence[Row]) -> list[float]:
        """Scores for `rows`, computed in some micro-batch together with other requests' rows."""
        if not rows:
            return []
        if self._closed or self._queue is None:
            raise BatcherClosed("the model batcher is not running (starting up or shutting down)")
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(scorer, list(rows), future))
        return await future

    def score_threadsafe(
        self, scorer: RowScorer, rows: Sequence[Row], timeout: float | None = 60.0
    ) -> list[float]:
        """`score` for code running in a worker thread (e.g. a Matcher inside run_in_threadpool)."""
        if self._loop is None:
            raise BatcherClosed("the model batcher was never started")
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop in this thread: the normal case
            on_loop = False
        if on_loop:
            raise RuntimeError("score_threadsafe called on the event-loop thread; await score() instead")
        future = asyncio.run_coroutine_threadsafe(self.score(scorer, rows), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BatcherOverloaded(
                f"the model queue did not answer within {timeout}s (overloaded)"
            ) from None

    # ---- the worker ------------------------------------------------------------------------
    async def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` plus whatever arrives within max_wait, up to max_batch_size; True if STOP was seen."""
        assert self._queue is not None
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Job)
            batch.append(item)
        return batch, False

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Job)
            batch, stopping = await self._collect(item)
            # one group per scorer object: normally one; two briefly around a hot swap
            groups: dict[int, list[_Job]] = {}
            for job in batch:
                groups.setdefault(id(job.scorer), []).append(job)
            for jobs in groups.values():
                await self._run_group(loop, jobs)
        # drain whatever slipped in behind STOP (nothing should, but never strand a caller)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Job):
                await self._run_group(loop, [item])

    async def _run_group(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # callers that gave up are not scored
        if not jobs:
            return
        rows = [row for job in jobs for row in job.rows]
        scorer = jobs[0].scorer
        threads = self.threads.for_batch(len(jobs)) if self.threads is not None else 0
        started = time.perf_counter()
        self.running_jobs = len(jobs)
        try:
            scores = await loop.run_in_executor(self._executor, self._score_sync, scorer, rows, threads)
        except Exception as exc:
            self.running_jobs = 0
            log.exception("model batch of %d rows failed", len(rows))
            if self.metrics:
                self.metrics.errors.labels("model_batch").inc()
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.running_jobs = 0
        took = time.perf_counter() - started
        a = self.SERVICE_SMOOTHING
        self.batch_seconds = took if self.batch_seconds is None else a * took + (1 - a) * self.batch_seconds
        self.batches += 1
        if self.metrics:
            self.metrics.batch_rows.labels(self.mode).observe(len(rows))
            self.metrics.batch_seconds.labels(self.mode).observe(took)
            self.metrics.batch_requests.labels(self.mode).observe(len(jobs))
            self.metrics.batch_adapters.labels(self.mode).observe(len({r[0] for r in rows}))
            if threads:
                self.metrics.batch_threads.labels(str(threads)).inc()
        start = 0
        for job in jobs:
            part = scores[start : start + len(job.rows)]
            start += len(job.rows)
            if not job.future.done():  # a cancelled caller (client went away) is simply skipped
                job.future.set_result(part)

    def _score_sync(self, scorer: RowScorer, rows: list[Row], threads: int = 0) -> list[float]:
        """Score on the model thread, on `threads` torch threads for this batch (0: as they are).
        torch's team size belongs to the calling thread, so the requests' threads keep theirs."""
        with torch_threads(threads) if threads else contextlib.nullcontext():
            if self.mode == "serial":
                return scorer.score_rows_serial([ScoreRow(*r) for r in rows])
            return scorer.score_rows(rows)


class BatchedFineRanker:
    """A `matching.types.FineRanker` whose scoring goes through the shared micro-batcher.

    One instance per (serving state, A/B arm): `models` maps business -> the ModelRef whose adapter
    scores it. Documents come from `ranking.finerank.LoraFineRanker.documents` (the code training
    uses), `logits` are raw like `LoraFineRanker.logits`, and `calibration(business)` is the one
    stored beside the adapter (the Matcher applies its cascade, fusion and selection). The Matcher
    calls `logits` from a worker thread; it blocks until the micro-batch holding its rows has run.
    """

    def __init__(self, batcher: MicroBatcher, scorer: Any, models: Mapping[str, ModelRef]) -> None:

        # Documents are built in the callers' threads while the model thread tokenizes pairs with
        # truncation: a Hugging Face fast tokenizer is not thread-safe (its truncation state is
        # shared), so every thread builds documents with its own copy of the tokenizer.

        self.batcher = batcher
        self.scorer = scorer
        self.models = dict(models)
        self._local = threading.local()
        self._make_documents = lambda: LoraFineRanker(_TokenizerCopy(scorer)).documents  # type: ignore[arg-type]
        self._calibrations = {
            business: read_calibration(ref.path) if ref.path else FineCalibration()
            for business, ref in self.models.items()
        }
        self._shows = {
            business: document_shows(ref.path) if ref.path else DocumentShows()
            for business, ref in self.models.items()
        }

    def version(self, business: str) -> str:
        ref = self.models.get(business)
        return ref.version if ref else ""

    def calibration(self, business: str) -> Any:
        """The business's `matching.fine.FineCalibration` (cascade, fusion, selection)."""
        return self._calibrations[business]

    def rows(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[Row]:
        ref = self.models.get(business)
        if ref is None:
            raise KeyError(f"no ranker adapter is loaded for business {business!r}")
        documents = getattr(self._local, "documents", None)
        if documents is None:
            documents = self._local.documents = self._make_documents()
        shown = self._shows[business].shown(examples, siblings)  # as the adapter was trained
        return [(ref.adapter_name, requirement, doc) for doc in documents(requirement, assets, *shown)]

    def logits(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[float]:
        """Raw logits for `assets` (coarse order); the Matcher applies the business's calibration.

        Under a `FineBudget` (see `run_within`), raises `FineRankerBusy` instead of queueing when the
        queue's expected wait is over the budget or the deadline cannot be met, and when the scores
        do not come back by the deadline."""
        budget = _budget.get()
        if budget is None:
            return self.batcher.score_threadsafe(
                self.scorer, self.rows(business, requirement, assets, examples, siblings)
            )
        reason = budget.refusal(self.batcher.expected_wait_s(), self.batcher.batch_seconds or 0.0)
        if reason is not None:  # refused before its documents are rendered: overload costs nothing
            raise FineRankerBusy(reason)
        rows = self.rows(business, requirement, assets, examples, siblings)
        try:
            return self.batcher.score_threadsafe(self.scorer, rows, timeout=budget.timeout(60.0))
        except BatcherOverloaded:
            if budget.deadline is None:
                raise
            raise FineRankerBusy("deadline: the fine ranker did not answer before the deadline") from None


class _TokenizerCopy:
    """What `LoraFineRanker.documents` reads from a scorer, with a private copy of its tokenizer."""

    def __init__(self, scorer: Any) -> None:
        self.tokenizer = copy.deepcopy(scorer.tokenizer)
        self.max_length = scorer.max_length
