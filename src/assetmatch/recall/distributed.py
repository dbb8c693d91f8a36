"""Dense embedding of many texts fanned out on Dask (`recall.dask_*` settings).

Embedding is the one step of an index build whose cost grows with the library and parallelizes
perfectly (texts are independent), so it is the step that leaves the driver:

- fewer than `recall.dask_min_tables` texts: embedded in this process (starting workers and loading
  the encoder in each costs a few seconds, more than a small job);
- otherwise the texts are cut into chunks of `recall.dask_chunk_size` and mapped over Dask workers:
  the scheduler at `recall.dask_address` (a deployment such as infra/dask/), or, when that is empty, a
  `LocalCluster` of `recall.dask_workers` processes started for this call. Inside a Dask task (the
  build flow run with prefect-dask's `DaskTaskRunner`) the task's own cluster is used through
  `worker_client`, so no second cluster is started.

Each worker process loads the encoder once (`_worker_encoder` is cached per process, like
`encoder.load_encoder`) and embeds its chunks with `recall.dask_threads_per_worker` torch threads, so
that workers x threads stays within the machine's cores. Results come back in input order; the
caller writes them to the vector cache as before, so a re-run embeds nothing unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from assetmatch.config import RecallConfig
from assetmatch.recall.encoder import EncoderSpec, embedding_dim, encode, load_encoder

Advance = Callable[[int], None]


@lru_cache(maxsize=4)
def _worker_encoder(spec: EncoderSpec, threads: int) -> Any:
    """The encoder of a worker process, loaded on its first chunk and kept for the next ones.

    The torch thread count is set here, once per process and before the first forward pass (torch
    ignores a later change of its inter-op pool), so two workers on two cores do not oversubscribe."""
    import torch

    torch.set_num_threads(threads)
    return load_encoder(spec)


def embed_chunk(spec: EncoderSpec, texts: Sequence[str], threads: int = 1) -> np.ndarray:
    """One Dask task: L2-normalised float32 vectors of `texts`, with the worker's cached encoder."""
    return encode(_worker_encoder(spec, threads), list(texts))


def encoder_loads() -> int:
    """How many times this process loaded an encoder for Dask chunks (the cache's misses)."""
    return int(_worker_encoder.cache_info().misses)


def _in_dask_task() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _can_reach_workers(recall: RecallConfig) -> bool:
    """False only where a LocalCluster cannot start: a daemonic process may not have children."""
    import multiprocessing

    return bool(recall.dask_address) or _in_dask_task() or not multiprocessing.current_process().daemon


@contextlib.contextmanager
def dask_client(recall: RecallConfig) -> Iterator[Any]:
    """A Dask client for the embedding: the enclosing task's cluster, `recall.dask_address`, or a
    LocalCluster of `recall.dask_workers` processes (closed on exit)."""
    from distributed import Client, LocalCluster, worker_client

    if _in_dask_task():
        with worker_client() as client:  # secedes this task's thread while the chunks run
            yield client
    elif recall.dask_address:
        try:
            client = Client(recall.dask_address)  # waits distributed.comm.timeouts.connect (30 s)
        except OSError as exc:  # distributed raises OSError("Timed out trying to connect ...")
            raise ConnectionError(
                f"recall.dask_address {recall.dask_address} is unreachable ({exc}): start the cluster "
                "(infra/dask/) or empty the setting to embed on a LocalCluster"
            ) from exc
        with client:
            yield client
    else:
        with (
            LocalCluster(
                n_workers=recall.dask_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=0,  # the driver holds the results; workers hold one chunk each
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client


def embed_texts(
    spec: EncoderSpec,
    texts: Sequence[str],
    recall: RecallConfig,
    advance: Advance | None = None,
    use_dask: bool | None = None,
) -> np.ndarray:
    """Vectors of `texts` (one row each, input order), embedded in process or on Dask.

    use_dask: force a side (None: Dask from `recall.dask_min_tables` texts on, except in a daemonic
    process without `recall.dask_address`, which cannot start a LocalCluster). `advance(n)` is called
    as texts are done, for a progress bar."""
    if use_dask is None:
        use_dask = len(texts) >= recall.dask_min_tables and _can_reach_workers(recall)
    if not texts or not use_dask:
        model = load_encoder(spec)
        if not texts:
            return np.zeros((0, embedding_dim(model)), dtype=np.float32)
        return _encode_with_progress(model, texts, advance)
    from distributed import as_completed

    size = recall.dask_chunk_size
    chunks = [list(texts[start : start + size]) for start in range(0, len(texts), size)]
    with dask_client(recall) as client:
        futures = [
            client.submit(embed_chunk, spec, chunk, recall.dask_threads_per_worker, pure=False)
            for chunk in chunks
        ]
        position = {future.key: i for i, future in enumerate(futures)}
        results: list[np.ndarray | None] = [None] * len(chunks)
        for future in as_completed(futures):
            i = position[future.key]
            results[i] = future.result()
            future.release()  # the worker may drop it now: the driver holds it
            if advance is not None:
                advance(len(chunks[i]))
    return np.ascontiguousarray(np.vstack([r for r in results if r is not None]), dtype=np.float32)


def _encode_with_progress(model: Any, texts: Sequence[str], advance: Advance | None) -> np.ndarray:
    class _Bar:  # encode() advances a rich-like progress per batch
        def advance(self, _task: Any, amount: int) -> None:
            if advance is not None:
                advance(amount)

    return encode(model, texts, progress=_Bar(), task=None)
