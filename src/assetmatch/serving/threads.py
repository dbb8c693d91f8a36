"""Math-library threads of the request work.

Every /v1/match runs in a thread of the server's pool, and a requirement is small math: one query
embedding (BLAS) and a gradient-boosting predict over ~50 candidates (OpenMP). Left at their
defaults, the libraries start a team of one thread per core *in every request thread*: sixteen
concurrent requests on a 2-core machine spin ~32 threads against each other, and throughput fell
below that of one request at a time (`benchmarks/serve_latency.py`: 40 requests/s at concurrency 1,
9 at concurrency 16). One thread per request and many requests at once uses the cores instead.

BLAS pools are process-wide, so `limit_math_threads` caps them once at start-up; OpenMP's team size
belongs to the calling thread, so `run_limited` sets it in the request's own worker thread.
threadpoolctl does both (it is what scikit-learn uses for the same job).

How many requests compute at once is the other half (`match_concurrency`): past a couple per core
they only time-slice the CPU, and the fine ranker's model thread, one among them, gets a sliver of
it — its batches took ten times longer at concurrency 16, so the overload rule shed the fine stage
from most answers. The route takes a slot of an anyio `CapacityLimiter` of that size; the others
wait for one without using the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_threads_before_load(n: int) -> None:
    """Cap the thread pools of math libraries not loaded yet, through their environment variables
    (an explicit value there wins)."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(n))


def limit_math_threads(n: int) -> None:
    """Cap the math libraries at `n` threads (0: leave them alone): those already loaded now,
    those loaded later through their environment variables."""
    if n <= 0:
        return
    from threadpoolctl import threadpool_limits

    limit_threads_before_load(n)
    threadpool_limits(limits=n)  # applies at once and stays: the returned object is not restored


def default_threads() -> int:
    """Half the cores, at most 4: the demo's math threads (`assetmatch demo --threads`). Its small
    per-request work (one query embedding, a gradient-boosting predict over ~50 candidates) is many
    times slower when OpenMP spins one thread per core on a machine whose cores are busy with other
    work."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def match_concurrency(configured: int, cores: int | None = None) -> int:
    """Match requests computed at once: `configured`, or two per core when it is 0 (one computes
    while the other waits for its fine-ranking batch)."""
    if configured > 0:
        return configured
    return 2 * max(cores if cores is not None else (os.cpu_count() or 1), 1)


@cache
def _openmp() -> Any:
    """The loaded OpenMP runtimes (looked up once: the first request comes after the models load)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="openmp")


def run_limited(n: int, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` with OpenMP teams of at most `n` threads in this thread (0: no limit)."""
    if n <= 0:
        return fn(*args)
    with _openmp().limit(limits=n):
        return fn(*args)
