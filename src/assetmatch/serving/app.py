"""`create_app(settings)`: the FastAPI app serving one base model with many LoRA adapters.

Lifespan (what uvicorn runs around the app):
- start: micro-batcher (model thread), base model, first serving state (index + every business's
  champion/challenger adapter), reload watcher, feedback flusher. A first load that fails leaves
  the app up but not ready (/readyz 503) and the watcher keeps trying.
- stop (SIGTERM / Ctrl-C): uvicorn stops accepting connections and lets in-flight requests finish;
  then the watcher stops, the batcher drains its queue, and buffered feedback is flushed (or
  spooled to disk if the lake is unreachable).

The parts are injectable (`index_source`, `model_source`, `scorer`, `lake`) so the same app runs
against the real registry and index in production and against temp ones in tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from assetmatch.config import Settings, load_settings
from assetmatch.lake.delta import Lake
from assetmatch.ranking.model import MultiAdapterScorer
from assetmatch.serving.auth import KeyStore, KeyWatcher, configured_keys
from assetmatch.serving.batching import MicroBatcher, model_threads
from assetmatch.serving.cache import build_cache
from assetmatch.serving.deps import ServingContext
from assetmatch.serving.errors import BodyLimitMiddleware, InternalErrorMiddleware, install_error_handlers
from assetmatch.serving.feedback import FeedbackWriter, RequestMemory
from assetmatch.serving.metrics import RequestMetricsMiddleware, ServingMetrics
from assetmatch.serving.reload import (
    IndexSource,
    LatestIndexSource,
    ModelSource,
    RegistryModelSource,
    Reloader,
    StateLoader,
)
from assetmatch.serving.routes import router
from assetmatch.serving.state import StateHolder
from assetmatch.serving.threads import limit_math_threads, match_concurrency

log = logging.getLogger(__name__)

DESCRIPTION = """Which warehouse tables answer a requirement? Ranked tables and a selected set per business.

Authenticate with `X-API-Key`. A key covers a list of businesses; asking for another one gives 403.
Send what you finally used to `/v1/feedback` with the answer's `request_id`: it feeds the online A/B.
"""

_NOT_GIVEN: Any = object()


def set_torch_threads(threads: int) -> None:
    """Intra-op threads of torch (process-wide); 0 keeps torch's default."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _default_scorer(settings: Settings) -> Any:

    set_torch_threads(settings.serving.torch_threads)

    return MultiAdapterScorer(
        settings.ranker.base,
        settings.ranker.device,
        max_length=settings.ranker.max_length,
        quantize=settings.ranker.quantize,
        batch_size=64,
        mixed=settings.serving.batch_mode == "mixed",
    )


def create_app(
    settings: Settings | None = None,
    *,
    index_source: IndexSource | None = None,
    model_source: ModelSource | None = _NOT_GIVEN,
    scorer: Any = _NOT_GIVEN,
    lake: Lake | None = None,
    spool_dir: str | None = None,
) -> FastAPI:
    """The app. Nothing heavy happens here: models and indexes load in the lifespan.

    model_source=None serves coarse ranking only (no adapters, no base model). The feedback spool
    is `serving.feedback_spool_dir` resolved against the config file's folder unless `spool_dir`.
    """
    settings = settings or load_settings()
    cfg = settings.serving
    limit_math_threads(cfg.math_threads)  # before the models load (serving.threads says why)
    metrics = ServingMetrics()
    keys = KeyStore(configured_keys(settings), required=cfg.require_api_key)
    batcher = MicroBatcher(cfg.max_batch_size, cfg.max_wait_ms, cfg.batch_mode, metrics)
    holder = StateHolder()
    lake = lake or Lake.from_settings(settings)
    ctx = ServingContext(
        settings=settings,
        keys=keys,
        metrics=metrics,
        holder=holder,
        batcher=batcher,
        loader=None,  # type: ignore[arg-type]  # set in the lifespan (its parts load there)
        reloader=None,  # type: ignore[arg-type]
        cache=build_cache(
            cfg.cache_size,
            cfg.redis_cache_url.get_secret_value() if cfg.redis_cache_url else None,
            cfg.cache_ttl_s,
            metrics,
        ),
        memory=RequestMemory(cfg.request_memory),
        feedback=FeedbackWriter(
            lake,
            cfg.feedback_flush_rows,
            cfg.feedback_flush_interval_s,
            spool_dir or settings.resolve_path(cfg.feedback_spool_dir),
            metrics,
        ),
        lake=lake,
    )

    key_watcher = KeyWatcher(keys, settings, metrics, cfg.reload_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.match_limiter = limiter = anyio.CapacityLimiter(match_concurrency(cfg.max_concurrent_matches))
        batcher.threads = model_threads(
            cfg.torch_threads, cfg.torch_threads_alone, lambda: int(limiter.borrowed_tokens)
        )
        await batcher.start()
        models = model_source
        if models is _NOT_GIVEN:
            models = RegistryModelSource(settings)
        model = scorer
        if model is _NOT_GIVEN:
            model = (
                await batcher.run_in_model_thread(_default_scorer, settings) if models is not None else None
            )
            if model is not None:  # what ranker.quantize (auto by default) chose on this machine
                log.info("fine ranker: %s on %s, precision %s (ranker.quantize: %s)",
                         settings.ranker.base, model.device, model.quantize, settings.ranker.quantize)  # fmt: skip
        ctx.scorer = model
        ctx.loader = StateLoader(
            settings, batcher, model, models, index_source or LatestIndexSource(settings)
        )
        ctx.reloader = Reloader(holder, ctx.loader, metrics, cfg.reload_interval_s)
        await ctx.feedback.start()
        if not await ctx.reloader.reload(force=True):
            log.error("no serving state could be loaded: %s (not ready; retrying every %ss)",
                      holder.last_error, cfg.reload_interval_s)  # fmt: skip
        ctx.reloader.start()
        key_watcher.start()
        ping = getattr(ctx.cache, "ping", None)
        if ping is not None and not await asyncio.to_thread(ping):
            log.warning("the Redis response cache does not answer: serving without it until it does")
        ctx.started = True
        try:
            yield
        finally:
            ctx.stopping = True
            await key_watcher.stop()
            await ctx.reloader.stop()
            await batcher.stop()  # scores everything already queued
            await ctx.feedback.stop()  # final flush (or spool)
            log.info("serving stopped cleanly")

    app = FastAPI(
        title="assetmatch",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.key_watcher = key_watcher
    # the last added runs outermost: metrics see every status, 500s included
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    app.include_router(router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` / several workers: settings from $ASSETMATCH_CONFIG."""
    return create_app(load_settings())
