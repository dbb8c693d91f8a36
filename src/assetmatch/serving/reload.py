"""Loading serving states and hot-swapping them.

`StateLoader.build` makes a complete new `ServingState` beside the one serving: the latest index
(the IndexSet CURRENT pointer, via `Matcher.from_settings`) and every business's champion and
challenger adapter (MLflow aliases), loaded into the one shared base model under per-version
names. Then the new state is checked (`check_state`): the index's manifest counts against what
loaded (assets list, BM25 documents, FAISS vectors, join graph, per-business row ranges) and one
probe query per business and arm that must come back as a valid answer. Only when all of it
loaded and passed does `Reloader` swap the reference. A failure leaves the old state serving,
unloads every adapter the attempt added, and is reported by /readyz (`reload_error`) and
`assetmatch_reload_failing` until a later reload succeeds or what is published is again what
serves (the failed version was reverted). Moving the champion alias back (a rollback) is just
another reload.

Adapters that only the old state used are unloaded after its last in-flight request finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from assetmatch.config import Settings
from assetmatch.matching.matcher import Matcher
from assetmatch.recall import publish
from assetmatch.registry.mlflow import Registry
from assetmatch.serving.batching import BatchedFineRanker, MicroBatcher
from assetmatch.serving.metrics import ServingMetrics
from assetmatch.serving.periodic import Periodic
from assetmatch.serving.state import BusinessInfo, MatchEngine, ModelRef, ServingState, StateHolder, Versions

log = logging.getLogger(__name__)

ARMS = ("champion", "challenger")


class ModelSource(Protocol):
    """Where the per-business ranker versions come from (the MLflow registry in production)."""

    def versions(self, businesses: Sequence[str]) -> dict[tuple[str, str], str]:
        """(business, arm) -> version label, for every alias that is set. Must be cheap (polled)."""
        ...

    def fetch(self, business: str, arm: str, version: str) -> str:
        """A local folder holding that version's adapter (downloaded once, then reused)."""
        ...


class IndexSource(Protocol):
    """Where the recall index comes from."""

    def current_id(self) -> str:
        """Id of the index the CURRENT pointer names (cheap; polled)."""
        ...

    def load(self) -> MatchEngine:
        """A Matcher (without fine ranker) over the current index."""
        ...


def index_id(manifest: dict[str, Any]) -> str:
    return str(manifest.get("id") or manifest.get("version") or "")


class RegistryModelSource:
    """Champion / challenger aliases in the MLflow registry (`assetmatch.registry.mlflow.Registry`)."""

    def __init__(self, settings: Settings, cache_dir: str | Path | None = None) -> None:

        self.registry = Registry.from_settings(settings)
        self.cache_dir = Path(cache_dir or Path(settings.training.adapters_dir) / "serving-cache")

    def versions(self, businesses: Sequence[str]) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for business in businesses:
            for arm in ARMS:
                mv = self.registry.version_by_alias(business, arm)
                if mv is not None:
                    out[(business, arm)] = str(mv.version)
        return out

    def fetch(self, business: str, arm: str, version: str) -> str:
        dest = self.cache_dir / business / version
        return str(self.registry.download_adapter(business, version, dest))


class LatestIndexSource:
    """The index published last under `settings.recall.index_root`, wrapped in a Matcher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def current_id(self) -> str:

        return publish.current_id(Path(self.settings.recall.index_root)) or ""

    def load(self) -> MatchEngine:

        matcher = Matcher.from_settings(self.settings)
        matcher.index.warmup()  # encoder and tokenizers now, not on the first request
        matcher.builder.warmup()  # the library's tokens per database (coarse features), likewise
        return matcher


class StateLoader:
    """Builds complete serving states; the scorer (one base model) is shared by all of them."""

    def __init__(
        self,
        settings: Settings,
        batcher: MicroBatcher,
        scorer: Any,
        models: ModelSource | None,
        indexes: IndexSource,
    ) -> None:
        self.settings = settings
        self.batcher = batcher
        self.scorer = scorer
        self.models = models
        self.indexes = indexes

    def businesses(self) -> list[BusinessInfo]:
        return [BusinessInfo(b.name, b.description) for b in self.settings.businesses if not b.shared]

    def probe(self) -> Versions:
        """The versions that are published now (blocking I/O: call it in a thread)."""
        names = [b.name for b in self.businesses()]
        model_versions = self.models.versions(names) if self.models else {}
        return Versions(
            self.indexes.current_id(), tuple(sorted((b, a, v) for (b, a), v in model_versions.items()))
        )

    async def build(self, wanted: Versions, previous: ServingState | None) -> ServingState:
        """A new state for `wanted`, sharing whatever did not change with `previous`."""
        # 1. the index (reuse the previous Matcher when the index did not change)
        if previous is not None and previous.versions.index == wanted.index:
            base = _bare(previous.engines["champion"])
            loaded_index = wanted.index
        else:
            base = await asyncio.to_thread(self.indexes.load)
            manifest = getattr(getattr(base, "index", None), "manifest", {}) or {}
            loaded_index = index_id(manifest) or wanted.index
        # 2. the adapters: fetched in a thread, loaded on the model thread (never during a forward)
        refs: dict[tuple[str, str], ModelRef] = {}
        loaded_now: list[str] = []
        try:
            for business, arm, version in wanted.models:
                if self.models is None:
                    break
                old = previous.model(business, arm) if previous else None
                if old is not None and old.version == version and old.path:
                    path = old.path
                else:
                    path = await asyncio.to_thread(self.models.fetch, business, arm, version)
                ref = ModelRef(business, arm, version, path)  # type: ignore[arg-type]
                if ref.adapter_name not in self.scorer.adapters:
                    await self.batcher.run_in_model_thread(self.scorer.load_adapter, ref.adapter_name, path)
                    loaded_now.append(ref.adapter_name)
                refs[(business, arm)] = ref
            # 3. one Matcher per arm, all over the same index (reading each adapter's calibration)
            engines: dict[str, MatchEngine] = {}
            for arm in ARMS:
                arm_refs = {b: r for (b, a), r in refs.items() if a == arm}
                if arm == "challenger" and not arm_refs:
                    continue
                engine: Any = copy.copy(base)  # shallow: shares index, features and coarse model
                engine.fine_ranker = (
                    BatchedFineRanker(self.batcher, self.scorer, arm_refs) if arm_refs else None
                )
                engines[arm] = engine
            versions = Versions.of(loaded_index, refs)
            state = ServingState(
                versions=versions, engines=engines, models=refs, businesses=tuple(self.businesses())
            )
            # 4. the consistency check: nothing goes live that does not answer every business (on
            # the same index, only businesses whose adapters changed answer differently than before)
            if previous is None or previous.versions.index != wanted.index:
                problems = await asyncio.to_thread(check_state, state, self.settings)
            else:
                moved = {b for b, _, _ in set(versions.models) ^ set(previous.versions.models)}
                problems = await asyncio.to_thread(check_state, state, self.settings, False, moved)
            if problems:
                raise StateCheckFailed(problems)
        except BaseException:
            # a half-loaded or failed state is dropped whole: unload what this attempt added
            for name in loaded_now:
                if name in self.scorer.adapters:
                    with contextlib.suppress(Exception):
                        await self.batcher.run_in_model_thread(self.scorer.unload_adapter, name)
            raise
        return state

    async def unload_unused(self, old: ServingState, current: ServingState, wait_s: float = 120.0) -> None:
        """Unload adapters only `old` used, once its in-flight requests are done."""
        deadline = time.monotonic() + wait_s
        while old.inflight.value > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        keep = current.adapter_names()
        for name in sorted(old.adapter_names() - keep):
            if name in self.scorer.adapters:
                await self.batcher.run_in_model_thread(self.scorer.unload_adapter, name)


def _bare(engine: MatchEngine) -> MatchEngine:
    bare = copy.copy(engine)
    bare.fine_ranker = None  # type: ignore[attr-defined]
    return bare


class StateCheckFailed(RuntimeError):
    """A new state loaded but is not consistent; it never goes live (the message lists why)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (
            f" (+{len(self.problems) - 5} more)" if len(problems) > 5 else ""
        )
        super().__init__(f"the new serving state failed its consistency check: {shown}")


PROBE_K = 5


def check_index(index: Any) -> list[str]:
    """What an `IndexSet`'s manifest says against what loaded: counts, row ranges, businesses.

    Every recall structure is addressed by row number, so one that disagrees with the assets list
    answers some business with nothing and another with rows past the end (an error)."""
    problems: list[str] = []
    manifest = getattr(index, "manifest", None) or {}
    rows = len(getattr(index, "asset_ids", ()))
    assets = getattr(index, "assets", {})
    counts = manifest.get("counts") or {}
    if "assets" in counts and int(counts["assets"]) != rows:
        problems.append(f"manifest counts {counts['assets']} assets, {rows} loaded")
    if len(assets) != rows:
        problems.append(f"{rows} asset rows but {len(assets)} distinct asset ids")
    lexical = getattr(index, "lexical", None)
    bm25_docs = _bm25_docs(lexical)
    if bm25_docs is not None and bm25_docs != rows:
        problems.append(f"the BM25 index holds {bm25_docs} documents for {rows} assets")
    dense = getattr(index, "dense", None)
    # each shard's own row count is checked when it maps its file; here: every business has its shard
    if dense is not None and len(dense.vectors) != rows:
        problems.append(f"the dense index holds {len(dense.vectors)} vectors for {rows} assets")
    graph = getattr(index, "graph", None)
    if graph is not None and getattr(graph, "adjacency", None) is not None:
        size = int(graph.adjacency.shape[0])
        if size != rows:
            problems.append(f"the join graph has {size} nodes for {rows} assets")
    past = getattr(index, "past", None)
    usage = getattr(index, "usage_lexical", None)
    usage_docs = _bm25_docs(usage)
    # bm25s cannot index an empty corpus: an index of no past requirement holds one placeholder
    if past is not None and usage_docs is not None and usage_docs != max(1, len(past)):
        problems.append(
            f"the usage BM25 index holds {usage_docs} documents for {len(past)} past requirements"
        )
    # per-business visibility: each business one contiguous, non-empty row range of its own tables
    ranges: dict[str, tuple[int, int]] = getattr(index, "ranges", {}) or {}
    listed = manifest.get("businesses")
    if listed is not None and sorted(listed) != sorted(ranges):
        missing = sorted(set(listed) - set(ranges))
        extra = sorted(set(ranges) - set(listed))
        problems.append(
            f"businesses in the manifest but without tables: {missing}; not in the manifest: {extra}"
        )
    covered = sum(end - start for start, end in ranges.values())
    if ranges and covered != rows:
        problems.append(
            f"business row ranges cover {covered} of {rows} rows (assets not grouped by business)"
        )
    whole_file = getattr(assets, "problems", None)
    if whole_file is not None:
        # tables read a business at a time (`recall.assets.BusinessAssets`): the file's size here,
        # each business's rows when its tables are first read (the probes below read them all)
        problems += whole_file()
        return problems
    ids = getattr(index, "asset_ids", [])
    for business, (start, end) in sorted(ranges.items()):
        if any(assets[a].business != business for a in ids[start:end] if a in assets):
            problems.append(f"rows {start}..{end} of business {business!r} hold other businesses' tables")
    return problems


def _bm25_docs(lexical: Any) -> int | None:
    """Documents a BM25 index holds: a bm25s index's own count, else (the per-business lexical
    shards, `recall.lexical.LexicalIndex`) the rows its shards were written with."""
    scores = getattr(getattr(lexical, "retriever", None), "scores", None)
    if isinstance(scores, dict) and "num_docs" in scores:
        return int(scores["num_docs"])
    docs = getattr(lexical, "num_docs", None)
    return None if docs is None else int(docs)


def probe_text(index: Any, business: str) -> str | None:
    """A requirement the business's own first table must answer: its name and comment."""
    ranges = getattr(index, "ranges", {}) or {}
    if business not in ranges:
        return None
    start, _ = ranges[business]
    asset = index.assets[index.asset_ids[start]]
    return f"{asset.name.replace('_', ' ')} {asset.comment or ''}".strip()


def check_answer(result: Any, visible: set[str], known: Any) -> list[str]:
    """A probe answer is valid when it is non-empty (when `known`, the index's tables, is given: the
    probe then asks for one of them), names only known tables of the visible businesses, selects
    only ranked tables and has finite scores."""
    problems: list[str] = []
    ranked = list(getattr(result, "ranked", []))
    if not ranked:
        return ["an empty answer"] if known is not None else []
    ids = {t.asset_id for t in ranked}
    if known is not None and any(t.asset_id not in known for t in ranked):
        problems.append("tables the index does not hold")
    if any(t.business not in visible for t in ranked):
        problems.append("tables of another business")
    if not set(result.selected) <= ids:
        problems.append("a selected table that is not ranked")
    if any(not math.isfinite(t.score) for t in ranked):
        problems.append("a score that is not finite")
    return problems


def check_state(
    state: ServingState, settings: Settings, index_changed: bool = True, only: set[str] | None = None
) -> list[str]:
    """Problems that keep `state` from going live ([] when it may): the index's own consistency
    (when it changed) and one probe query per business (of `only`, when given) and arm through the
    whole Matcher, fine ranker included; a business with an adapter also scores two tables through
    it directly."""
    problems: list[str] = []
    champion = state.engines.get("champion")
    if champion is None:
        return ["no champion engine"]
    index = getattr(champion, "index", None)
    if index is not None and index_changed:
        problems += check_index(index)
        if problems:  # probing a broken index answers nothing useful
            return problems
    shared = {b.name for b in settings.businesses if b.shared}
    for info in state.businesses:
        business = info.name
        if only is not None and business not in only:
            continue
        text = probe_text(index, business) if index is not None else info.name
        if text is None:
            log.warning("business %s has no table in the index: nothing to probe", business)
            continue
        for arm, engine in state.engines.items():
            ranker: Any = getattr(engine, "fine_ranker", None)
            if arm == "challenger" and (ranker is None or not ranker.version(business)):
                continue
            where = f"probe of {business!r} ({arm})"
            try:
                result = engine.match(business, text, PROBE_K)
                problems += [
                    f"{where}: {p}"
                    for p in check_answer(result, {business} | shared, getattr(index, "assets", None))
                ]
                if ranker is not None and ranker.version(business) and result.ranked and index is not None:
                    tables = [index.assets[t.asset_id] for t in result.ranked[:2]]
                    logits = ranker.logits(business, text, tables)
                    if len(logits) != len(tables) or not all(math.isfinite(x) for x in logits):
                        problems.append(f"{where}: the adapter gave {logits!r} for {len(tables)} tables")
            except Exception as exc:  # the probe is the check: any failure is a reason, not a crash
                problems.append(f"{where}: {type(exc).__name__}: {exc}")
    return problems


class Reloader:
    """Polls for new versions every `interval_s` and swaps them in; `reload()` does one round now."""

    def __init__(
        self, holder: StateHolder, loader: StateLoader, metrics: ServingMetrics, interval_s: float = 30.0
    ) -> None:
        self.holder = holder
        self.loader = loader
        self.metrics = metrics
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._periodic = Periodic(self.reload, interval_s, "assetmatch-reload-watcher")
        self._cleanups: set[asyncio.Task[None]] = set()

    async def reload(self, force: bool = False) -> bool:
        """Swap in what is published now if it differs from what serves. True if a swap happened."""
        async with self._lock:
            self.holder.last_attempt = time.time()
            current = self.holder.current
            try:
                wanted = await asyncio.to_thread(self.loader.probe)
                if current is not None and not force and wanted == current.versions:
                    # what is published is what serves (e.g. a failed version was reverted)
                    self._clear_failure()
                    return False
                new = await self.loader.build(wanted, current)
            except Exception as exc:
                self.holder.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads.labels("failed").inc()
                self.metrics.reload_failing.set(1)
                self._count_adapters()
                if isinstance(exc, StateCheckFailed):
                    log.error(
                        "reload refused; %s keeps serving: %s", current.id if current else "nothing", exc
                    )
                else:
                    log.exception("reload failed; %s keeps serving", current.id if current else "nothing")
                return False
            old = self.holder.swap(new)
            self.metrics.reloads.labels("swapped").inc()
            self._clear_failure()
            self._count_adapters()
            if old is not None:
                self.metrics.state_info.remove(old.id)
            self.metrics.state_info.labels(new.id).set(new.loaded_at)
            log.info("serving state %s: index %s, models %s", new.id, new.versions.index, new.versions.models)
            if old is not None:
                task = asyncio.create_task(self._cleanup(old, new))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)
            return True

    def _clear_failure(self) -> None:
        if self.holder.last_error is not None:
            log.info("reload error cleared: what is published is what serves")
        self.holder.last_error = None
        self.metrics.reload_failing.set(0)

    def _count_adapters(self) -> None:
        self.metrics.adapters_loaded.set(len(self.loader.scorer.adapters) if self.loader.scorer else 0)

    async def _cleanup(self, old: ServingState, new: ServingState) -> None:
        try:
            await self.loader.unload_unused(old, new)
            self._count_adapters()
        except Exception:
            log.exception("unloading the adapters of state %s failed (they stay loaded)", old.id)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        for task in list(self._cleanups):
            task.cancel()
