"""Judging an adapter: lists scored one after the other against side by side (`lists_at_once`).

An adapter's judging (validation checks, calibration, the gate) scores each requirement's list on
serving's torch threads, because the gate holds each list's latency against its budget. On a CPU
with more cores than that, `training.train.score_side_by_side` scores several lists at once, one
model copy per thread. This script scores the same synthetic lists (a requirement and `--tables`
tables each, compressed to the token budget as serving does) with the packaged starting adapter:

- one list at a time on `--threads` torch threads (serving's), the baseline;
- one list at a time on every core (what two threads per list would buy instead);
- `lists_at_once` lists side by side, each on `--threads` threads;

and prints, per way, the seconds for all lists, lists/s against the baseline, and the lists'
p50 / p95 latency; then whether every way gave the same logits. Run it on a quiet machine:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/judge_side_by_side.py --quantize auto
"""

from __future__ import annotations

import argparse
import os
import random
import time
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# fmt: off
WORDS = [
    "user", "order", "pay", "daily", "active", "retention", "channel", "game", "item", "revenue",
    "level", "login", "device", "region", "battle", "hero", "match", "rank", "season", "card",
]
# fmt: on


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lists", type=int, default=80, help="requirement lists to score (the demo: 70-90)")
    parser.add_argument("--tables", type=int, default=10, help="tables per list (the demo's candidate_k)")
    parser.add_argument("--max-length", type=int, default=64, help="token budget per pair (the demo's)")
    parser.add_argument("--threads", type=int, default=1, help="serving's torch threads (the demo's: 1)")
    parser.add_argument("--quantize", default="auto", help="none | int8 | bf16 | auto (ranker.quantize)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the fastest is shown")
    args = parser.parse_args()

    import numpy as np
    import torch

    from assetmatch.models import Column, TableAsset
    from assetmatch.ranker_config import RankerConfig
    from assetmatch.training.starting import packaged_adapter
    from assetmatch.training.train import judging_rankers, score_side_by_side

    folder = packaged_adapter()
    if folder is None:
        raise SystemExit("the packaged starting adapter is missing: reinstall assetmatch")
    base = RankerConfig.load(folder).base
    rng = random.Random(0)

    def table(i: int) -> TableAsset:
        return TableAsset(
            business="g",
            database="dw",
            name=f"dws_{rng.choice(WORDS)}_{i}",
            comment=" ".join(rng.choices(WORDS, k=8)),
            columns=[
                Column(name=f"c{j}_{rng.choice(WORDS)}", comment=" ".join(rng.choices(WORDS, k=3)))
                for j in range(12)
            ],
        )

    lists: list[tuple[str, list[TableAsset], dict[str, str], None]] = [
        (
            " ".join(rng.choices(WORDS, k=6)),
            [table(i * args.tables + j) for j in range(args.tables)],
            {},
            None,
        )
        for i in range(args.lists)
    ]
    rankers = judging_rankers({"a": (folder, "1")}, base, "cpu", args.max_length, args.quantize, args.threads)
    side = len(rankers)  # `lists_at_once` at serving's threads
    cores = os.cpu_count() or 1
    scorers = [partial(ranker.logits, "a") for ranker in rankers]
    print(
        f"{args.lists} lists x {args.tables} tables, {args.max_length} tokens, {rankers[0].scorer.quantize}, "
        f"{cores} cores; load average {os.getloadavg()[0]:.2f}"
    )
    ways = [
        (f"one at a time, {args.threads} thread(s)", 1, args.threads),
        (f"one at a time, {cores} threads", 1, cores),
        (f"{side} side by side, {args.threads} thread(s) each", side, args.threads),
    ]
    results = {}
    baseline = None
    for name, n, threads in ways:
        torch.set_num_threads(threads)
        score_side_by_side(scorers[:n], lists[: 2 * n])  # warm-up
        best = None
        for _ in range(args.repeats):
            start = time.perf_counter()
            scored = score_side_by_side(scorers[:n], lists)
            seconds = time.perf_counter() - start
            if best is None or seconds < best[0]:
                best = (seconds, scored)
        assert best is not None
        seconds, scored = best
        baseline = baseline or seconds
        ms = np.array([latency for _, latency in scored])
        results[name] = [logits for logits, _ in scored]
        print(
            f"{name:<36} {seconds:6.2f} s  {args.lists / seconds:6.1f} lists/s ({baseline / seconds:.2f}x)  "
            f"p50 {np.percentile(ms, 50):6.1f} ms  p95 {np.percentile(ms, 95):6.1f} ms"
        )
    first = next(iter(results.values()))
    same = all(np.allclose(np.array(v), np.array(first), atol=1e-5) for v in results.values())
    print(f"the same logits every way (to 1e-5): {same}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
