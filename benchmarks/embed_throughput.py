"""Dense embedding throughput (table documents/s): in this process, on 1 Dask worker and on 2, in one run.

The documents are those of `recall_scale.py`'s synthetic warehouse (same builder as the index:
`recall.documents.table_document`). Each Dask setting is a LocalCluster of N single-threaded worker
processes whose torch uses `--threads-per-worker` threads (default: cores // 2, so that 2 workers x
threads <= cores); the in-process run uses `--threads-per-worker` x 2 torch threads, i.e. the whole
machine. Cluster start and the one encoder load per worker are timed apart from the steady-state
throughput (the chunks themselves), since a real build pays the start once per build.

    HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python benchmarks/embed_throughput.py --tables 2000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load() -> str:
    return f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", type=int, default=2000, help="table documents to embed per setting")
    parser.add_argument("--chunk-size", type=int, default=256, help="documents per Dask task")
    parser.add_argument("--threads-per-worker", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    import torch
    from distributed import Client, LocalCluster

    from assetmatch.config import RecallConfig
    from assetmatch.recall.distributed import embed_texts, encoder_loads
    from assetmatch.recall.documents import table_document
    from assetmatch.recall.encoder import EncoderSpec, encode, load_encoder
    from recall_scale import synthetic_assets  # benchmarks/ is on sys.path when run as a script

    texts = [table_document(a) for a in synthetic_assets(args.tables, 20, random.Random(11))]
    spec = EncoderSpec()
    print(f"{len(texts)} table documents, mean {sum(map(len, texts)) / len(texts):.0f} characters; {load()}")

    threads = args.threads_per_worker
    torch.set_num_threads(threads * 2)
    model = load_encoder(spec)
    encode(model, texts[:64])  # warm-up
    start = time.perf_counter()
    reference = encode(model, texts)
    in_process = len(texts) / (time.perf_counter() - start)
    print(f"in process ({threads * 2} torch threads): {in_process:.1f} tables/s; {load()}")

    rates: dict[int, float] = {}
    for workers in (1, 2):
        started = time.perf_counter()
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=0,
            ) as cluster,
            Client(cluster) as client,
        ):
            warm = [
                client.submit(embed_texts_warmup, spec, threads, workers=[w], pure=False)
                for w in client.scheduler_info()["workers"]
            ]
            client.gather(warm)
            ready = time.perf_counter() - started
            recall = RecallConfig(
                dask_address=cluster.scheduler_address,
                dask_chunk_size=args.chunk_size,
                dask_threads_per_worker=threads,
            )
            start = time.perf_counter()
            vectors = embed_texts(spec, texts, recall, use_dask=True)
            seconds = time.perf_counter() - start
            loads = client.run(encoder_loads)
        rates[workers] = len(texts) / seconds
        same = bool(abs(vectors - reference).max() < 1e-5)
        print(
            f"dask, {workers} worker(s) x {threads} torch thread(s): {rates[workers]:.1f} tables/s "
            f"(cluster start + encoder load {ready:.1f} s; encoder loads per worker {sorted(loads.values())}; "
            f"same vectors as in process: {same}); {load()}"
        )
    print(
        f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x; 2 workers / in process: {rates[2] / in_process:.2f}x; "
        f"{load()}"
    )


def embed_texts_warmup(spec: object, threads: int) -> int:
    """Load the encoder in a worker before timing (the same per-process cache the chunks use)."""
    from assetmatch.recall.distributed import embed_chunk

    embed_chunk(spec, ["warm up"], threads)  # type: ignore[arg-type]
    return threads


if __name__ == "__main__":
    main()
