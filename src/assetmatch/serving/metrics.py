"""Prometheus metrics of one app instance (own CollectorRegistry, so several apps can coexist)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
FINE_PAIRS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128)


class ServingMetrics:
    """Latency per stage / business / model version, batch sizes, adapters, errors, cache, reloads,
    and how often (and how deep) the fine ranker ran."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "assetmatch_request_seconds",
            "End-to-end latency of an API call.",
            ["route", "business", "model_version", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "assetmatch_stage_seconds",
            "Latency of one matching stage (recall, coarse, fine, ...).",
            ["stage", "business", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "assetmatch_batch_rows",
            "Rows per model micro-batch.",
            ["mode"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "assetmatch_batch_seconds",
            "Service time of one model micro-batch (what the overload rule's wait estimate reads).",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "assetmatch_batch_requests",
            "Requests per model micro-batch.",
            ["mode"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_adapters = Histogram(
            "assetmatch_batch_adapters",
            "Distinct adapters in one micro-batch.",
            ["mode"],
            buckets=(1, 2, 3, 4, 6, 8, 16, 32),
            registry=r,
        )
        self.batch_threads = Counter(
            "assetmatch_batch_threads_total",
            "Model micro-batches by the torch threads they ran on (serving.torch_threads, or "
            "serving.torch_threads_alone for a batch every request being computed waits on).",
            ["threads"],
            registry=r,
        )
        self.adapters_loaded = Gauge(
            "assetmatch_adapters_loaded", "LoRA adapters held beside the base.", registry=r
        )
        self.errors = Counter("assetmatch_errors_total", "Errors by kind.", ["kind"], registry=r)
        self.cache_requests = Counter(
            "assetmatch_cache_requests_total", "Response-cache lookups.", ["result"], registry=r
        )
        self.cache_hit_ratio = Gauge("assetmatch_cache_hit_ratio", "Hits / lookups since start.", registry=r)
        self.reloads = Counter(
            "assetmatch_reloads_total", "Serving-state reloads by outcome.", ["outcome"], registry=r
        )
        self.reload_failing = Gauge(
            "assetmatch_reload_failing",
            "1 while the latest reload attempt failed (old state serving).",
            registry=r,
        )
        self.state_info = Gauge(
            "assetmatch_state_loaded_timestamp",
            "When the serving state now in use was loaded.",
            ["state_id"],
            registry=r,
        )
        self.inflight = Gauge("assetmatch_inflight_requests", "Match requests being answered.", registry=r)
        self.feedback_rows = Counter(
            "assetmatch_feedback_rows_total", "Feedback rows by outcome.", ["outcome"], registry=r
        )
        self.arm_requests = Counter(
            "assetmatch_arm_requests_total",
            "Answers per business and A/B arm.",
            ["business", "arm"],
            registry=r,
        )
        self.fine_requests = Counter(
            "assetmatch_fine_requests_total",
            "Computed (not cached) answers by business and fine ranker outcome: ran, skipped (the "
            "cascade kept the coarse answer) or none (no adapter).",
            ["business", "fine"],
            registry=r,
        )
        self.fine_pairs = Histogram(
            "assetmatch_fine_pairs",
            "Tables the fine ranker scored per computed answer (0 when it did not run).",
            ["business"],
            buckets=FINE_PAIRS_BUCKETS,
            registry=r,
        )
        self.cache_errors = Counter(
            "assetmatch_cache_errors_total",
            "Response-cache (Redis) operations that failed and were answered without the cache.",
            ["op"],
            registry=r,
        )
        self.key_reloads = Counter(
            "assetmatch_key_reloads_total",
            "Re-reads of the API keys (config file / keys file) by outcome: changed, unchanged, failed.",
            ["outcome"],
            registry=r,
        )
        self.degraded = Counter(
            "assetmatch_degraded_total",
            "Answers given from the coarse ranking because the fine ranker's queue was over its wait "
            "budget (reason=queue) or the client's deadline could not be met (reason=deadline).",
            ["business", "reason"],
            registry=r,
        )
        self._hits = 0
        self._lookups = 0

    def cache_lookup(self, hit: bool) -> None:
        self.cache_requests.labels("hit" if hit else "miss").inc()
        self._lookups += 1
        self._hits += int(hit)
        self.cache_hit_ratio.set(self._hits / self._lookups)

    def fine_answer(self, business: str, depth: int, skipped: str) -> None:
        """Count one computed answer: did the fine ranker run, and on how many tables."""
        outcome = "ran" if depth else ("skipped" if skipped else "none")
        self.fine_requests.labels(business, outcome).inc()
        self.fine_pairs.labels(business).observe(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope) -> str:
    """The matched route's last path segment ('match', 'feedback', 'healthz', ...); 'unmatched' for
    paths no route knows (a bounded label set, whatever clients send)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        return "unmatched"
    return path.rstrip("/").rsplit("/", 1)[-1] or "root"


class RequestMetricsMiddleware:
    """Times and counts every HTTP answer by route and status (401, 404, 413, 422, 500, 503 too).

    The outermost middleware, so it sees the status that really went out. Routes may name the
    business and model version in `request.state` (`business`, `model_version`) for the labels.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes every handler is a 500 to the client

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            state = scope.get("state") or {}
            self.metrics.request_seconds.labels(
                route_label(scope),
                str(state.get("business", "")),
                str(state.get("model_version", "")),
                str(status),
            ).observe(time.perf_counter() - start)
