"""Loading serving states and hot-swapping them.

`StateLoader.build` makes a complete new `ServingState` beside the one serving: the latest index
(the IndexSet CURRENT pointer, via `Matcher.from_settings`) and every business's champion and
challenger adapter (MLflow aliases), loaded into the one shared base model under per-version
names. Only when all of it loaded does `Reloader` swap the reference. A failure leaves the old
state serving and is reported by /readyz and `assetmatch_reload_failing`. Moving the champion
alias back (a rollback) is just another reload.

Adapters that only the old state used are unloaded after its last in-flight request finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
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
        except Exception:
            # a half-loaded state is dropped whole: unload what this attempt added, keep the rest
            for name in loaded_now:
                if name in self.scorer.adapters and len(self.scorer.adapters) > 1:
                    await self.batcher.run_in_model_thread(self.scorer.unload_adapter, name)
            raise
        # 3. one Matcher per arm, all over the same index
        engines: dict[str, MatchEngine] = {}
        for arm in ARMS:
            arm_refs = {b: r for (b, a), r in refs.items() if a == arm}
            if arm == "challenger" and not arm_refs:
                continue
            engine = copy.copy(base)  # shallow: shares index, features and coarse model
            engine.fine_ranker = BatchedFineRanker(self.batcher, self.scorer, arm_refs) if arm_refs else None  # type: ignore[attr-defined]
            engines[arm] = engine
        versions = Versions(loaded_index, tuple(sorted((b, a, r.version) for (b, a), r in refs.items())))
        return ServingState(
            versions=versions, engines=engines, models=refs, businesses=tuple(self.businesses())
        )

    async def unload_unused(self, old: ServingState, current: ServingState, wait_s: float = 120.0) -> None:
        """Unload adapters only `old` used, once its in-flight requests are done."""
        deadline = time.monotonic() + wait_s
        while old.inflight.value > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        keep = current.adapter_names()
        for name in sorted(old.adapter_names() - keep):
            if name in self.scorer.adapters and len(self.scorer.adapters) > 1:
                await self.batcher.run_in_model_thread(self.scorer.unload_adapter, name)


def _bare(engine: MatchEngine) -> MatchEngine:
    bare = copy.copy(engine)
    bare.fine_ranker = None  # type: ignore[attr-defined]
    return bare


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
        self._task: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    async def reload(self, force: bool = False) -> bool:
        """Swap in what is published now if it differs from what serves. True if a swap happened."""
        async with self._lock:
            self.holder.last_attempt = time.time()
            current = self.holder.current
            try:
                wanted = await asyncio.to_thread(self.loader.probe)
                if current is not None and not force and wanted == current.versions:
                    return False
                new = await self.loader.build(wanted, current)
            except Exception as exc:
                self.holder.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads.labels("failed").inc()
                self.metrics.reload_failing.set(1)
                log.exception("reload failed; %s keeps serving", current.id if current else "nothing")
                return False
            old = self.holder.swap(new)
            self.metrics.reloads.labels("swapped").inc()
            self.metrics.reload_failing.set(0)
            self.metrics.adapters_loaded.set(len(self.loader.scorer.adapters) if self.loader.scorer else 0)
            if old is not None:
                self.metrics.state_info.remove(old.id)
            self.metrics.state_info.labels(new.id).set(new.loaded_at)
            log.info("serving state %s: index %s, models %s", new.id, new.versions.index, new.versions.models)
            if old is not None:
                task = asyncio.create_task(self._cleanup(old, new))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)
            return True

    async def _cleanup(self, old: ServingState, new: ServingState) -> None:
        try:
            await self.loader.unload_unused(old, new)
            self.metrics.adapters_loaded.set(len(self.loader.scorer.adapters) if self.loader.scorer else 0)
        except Exception:
            log.exception("unloading the adapters of state %s failed (they stay loaded)", old.id)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.reload()

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="assetmatch-reload-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._cleanups):
            task.cancel()
