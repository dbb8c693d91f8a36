"""Throughput of the multi-LoRA scorer on micro-batches of 3 businesses' rows:

- mixed:   one forward pass per micro-batch, each row through its own adapter (PEFT adapter_names);
- serial:  the baseline, one pass per adapter present in the batch (set_adapter);
- ceiling: the same number of rows, all of one adapter, one pass (no per-row routing at all).

Rows are real (requirement, table document) pairs built from synthetic tables with the same
document builder serving uses. The adapters are freshly initialised (untrained, seeded) LoRA
adapters: throughput does not depend on training. Run with `nice`:

    nice .venv/bin/python benchmarks/multi_lora.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def timed(fn: Any, rows: list[Any], seconds: float) -> float:
    """Rows per second of `fn(rows)`, repeated for about `seconds` (after one warm-up call)."""
    fn(rows)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(rows)
        done += len(rows)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batch-rows", type=int, default=160, help="rows per micro-batch (8 requests x top-20)"
    )
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20, help="time per mode")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument(
        "--quantize",
        choices=["none", "int8", "bf16", "auto"],
        default="none",
        help="CPU precision (ranker.quantize)",
    )
    args = parser.parse_args()

    import torch

    from assetmatch.ranking.finerank import LoraFineRanker
    from assetmatch.ranking.model import MultiAdapterScorer, ScoreRow
    from assetmatch.serving.synthetic import synthetic_requirements, synthetic_tables, untrained_adapter

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    root = Path(tempfile.mkdtemp(prefix="multi-lora-"))
    names = [f"b{i}" for i in range(args.adapters)]
    scorer = MultiAdapterScorer(  # mixed: score_rows is the mixed pass (serving's default is serial)
        device=args.device,
        max_length=args.max_length,
        batch_size=args.batch_rows,
        mixed=True,
        quantize=args.quantize,
    )
    for i, name in enumerate(names):
        scorer.load_adapter(name, untrained_adapter(root / name, seed=100 + i))
    documents = LoraFineRanker(scorer).documents
    tables = synthetic_tables("bench", 200, seed=3)
    texts = synthetic_requirements(50, seed=4)
    rng = random.Random(5)
    mixed_rows: list[ScoreRow] = []
    while len(mixed_rows) < args.batch_rows:  # whole requests of 20 rows, businesses interleaved
        name = names[len(mixed_rows) // 20 % len(names)]
        text = rng.choice(texts)
        for doc in documents(text, rng.sample(tables, 20)):
            mixed_rows.append(ScoreRow(name, text, doc))
    mixed_rows = mixed_rows[: args.batch_rows]
    single_rows = [ScoreRow(names[0], r.requirement, r.document) for r in mixed_rows]

    results = {
        "mixed": timed(scorer.score_rows, mixed_rows, args.seconds),
        "serial": timed(scorer.score_rows_serial, mixed_rows, args.seconds),
        "ceiling": timed(scorer.score_rows_serial, single_rows, args.seconds),
    }
    summary = {
        "rows_per_s": {k: round(v, 1) for k, v in results.items()},
        "mixed_over_serial": round(results["mixed"] / results["serial"], 3),
        "mixed_over_ceiling": round(results["mixed"] / results["ceiling"], 3),
        "batch_rows": args.batch_rows,
        "adapters": args.adapters,
        "device": scorer.device,
        "quantize": scorer.quantize,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
