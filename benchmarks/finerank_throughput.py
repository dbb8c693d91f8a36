"""Fine-ranker throughput: scored (requirement, table) pairs/s in fp32, int8 and bf16 (bf16 alone on CUDA), and
how far that is from a bare matrix-multiply roofline measured in the same run.

- rows: synthetic requirements x synthetic tables, compressed to the token budget by the same
  document builder serving uses, spread over 3 seeded adapters and scored as serving scores them
  (one pass per adapter present in a batch, `serving.batch_mode: serial`);
- throughput: `MultiAdapterScorer.score_rows` for each budget (--max-lengths) x micro-batch
  (--batches) x precision; plus, at the first budget and batch, int8 without length sorting and
  int8 on one thread;
- roofline: every Linear shape of the base, run as one bare GEMM each (M = batch x mean tokens),
  in the scorer's precision (fp32, its own int8 Linear, bf16): the FLOP/s a perfect fine stage could
  reach here;
- fine stage = X x of roofline, X = model FLOP/s achieved / roofline FLOP/s, where model FLOPs per
  pair = 2 x non-embedding parameters x real tokens + attention (4 x layers x tokens^2 x hidden).

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/finerank_throughput.py --seconds 8
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def timed(fn: Callable[[], Any], seconds: float) -> float:
    """Seconds per call of `fn`, repeated for about `seconds` (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def model_shapes(model: Any) -> tuple[list[tuple[int, int]], int, int, int]:
    """(in, out) of every Linear of the encoder, non-embedding parameter count, layers, hidden size."""
    from torch import nn

    shapes = [
        (m.in_features, m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and "classifier" not in n
    ]
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return shapes, params, model.config.num_hidden_layers, model.config.hidden_size


def roofline(
    shapes: list[tuple[int, int]], rows: int, seconds: float, precision: str, device: str = "cpu"
) -> float:
    """FLOP/s of one pass of bare GEMMs over the model's Linear shapes, `rows` token rows each, in
    `precision` (fp32, bf16, or int8: the scorer's int8 Linear); bf16 on CUDA (what runs there)."""
    import torch
    from torch import nn

    from assetmatch.ranking.model import _int8_linear_class

    dtype = torch.bfloat16 if device == "cuda" or precision == "bf16" else torch.float32
    layers = [nn.Linear(i, o).to(device=device, dtype=dtype) for i, o in shapes]
    if precision == "int8":
        layers = [_int8_linear_class()(layer) for layer in layers]
    inputs = {i: torch.randn(rows, i, device=device, dtype=dtype) for i in {i for i, _ in shapes}}

    def run() -> None:
        with torch.inference_mode():
            for layer in layers:
                layer(inputs[layer.in_features])
        if device == "cuda":  # kernels are queued asynchronously: time them, not their launch
            torch.cuda.synchronize()

    flops = sum(2 * rows * i * o for i, o in shapes)
    return flops / timed(run, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-lengths", default="128,96", help="token budgets, comma-separated")
    parser.add_argument("--batches", default="32,64", help="micro-batch sizes, comma-separated")
    parser.add_argument("--rows", type=int, default=256, help="pairs per score_rows call")
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8, help="time per measurement")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from assetmatch.ranking.model import MultiAdapterScorer, bf16_units
    from assetmatch.serving.synthetic import synthetic_requirements, synthetic_tables, untrained_adapter

    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="finerank-"))
    names = [f"b{i}" for i in range(args.adapters)]
    folders = {name: untrained_adapter(root / name, seed=100 + i) for i, name in enumerate(names)}
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    # bf16 on a CPU: fast where it multiplies bf16 in hardware (AMX, AVX-512 BF16), emulated elsewhere
    precisions = ["bf16"] if cuda else ["fp32", "int8", "bf16"]
    tables = synthetic_tables("bench", 200, seed=3)
    texts = synthetic_requirements(50, seed=4)
    default_threads = torch.get_num_threads()

    results: dict[str, Any] = {}
    scorers: dict[tuple[int, str], Any] = {}
    for max_length in [int(x) for x in args.max_lengths.split(",")]:
        for precision in precisions:
            scorer = MultiAdapterScorer(
                device="cuda" if cuda else "cpu",
                max_length=max_length,
                quantize="none" if precision == "fp32" or cuda else precision,
            )
            for name, folder in folders.items():
                scorer.load_adapter(name, folder)
            scorers[(max_length, precision)] = scorer
        scorer = scorers[(max_length, precisions[0])]
        rows = _rows_for(scorer, names, texts, tables, args.rows)
        lengths = [len(e["input_ids"]) for e in scorer._encode(rows)]
        tokens = sum(lengths) / len(lengths)
        shapes, params, layers, hidden = model_shapes(scorer._base_model)
        pair_flops = 2 * params * tokens + 4 * layers * tokens**2 * hidden
        for batch in [int(x) for x in args.batches.split(",")]:
            padded_sorted = sum(max(c) * len(c) for c in _chunks(sorted(lengths), batch))
            padded_input = sum(max(c) * len(c) for c in _chunks(lengths, batch))
            entry: dict[str, Any] = {
                "mean_tokens": round(tokens, 1),
                "padding_share_sorted": round(1 - sum(lengths) / padded_sorted, 3),
                "padding_share_input_order": round(1 - sum(lengths) / padded_input, 3),
            }
            for precision in precisions:
                s = scorers[(max_length, precision)]
                s.batch_size = batch
                rate = len(rows) / timed(functools.partial(s.score_rows, rows), args.seconds)
                roof = roofline(
                    shapes, int(batch * tokens), args.seconds, precision, "cuda" if cuda else "cpu"
                )
                entry[precision] = {
                    "pairs_per_s": round(rate, 1),
                    "model_gflop_per_s": round(rate * pair_flops / 1e9, 1),
                    "roofline_gflop_per_s": round(roof / 1e9, 1),
                    "fraction_of_roofline": round(rate * pair_flops / roof, 3),
                }
            if "int8" in entry:
                for precision in ("int8", "bf16"):
                    entry[f"{precision}_over_fp32"] = round(
                        entry[precision]["pairs_per_s"] / entry["fp32"]["pairs_per_s"], 2
                    )
            results[f"len{max_length}_batch{batch}"] = entry

    # Variants at the first budget and batch: what sorting rows by length and a second thread buy.
    first_len, first_batch = int(args.max_lengths.split(",")[0]), int(args.batches.split(",")[0])
    variants: dict[str, float] = {}
    if not cuda:
        s = scorers[(first_len, "int8")]
        s.batch_size = first_batch
        rows_first = _rows_for(s, names, texts, tables, args.rows)
        variants["int8_sorted"] = len(rows_first) / timed(lambda: s.score_rows(rows_first), args.seconds)
        sorted_batches = s._batches
        s._batches = lambda idx, _enc: [idx[i : i + s.batch_size] for i in range(0, len(idx), s.batch_size)]
        variants["int8_input_order"] = len(rows_first) / timed(lambda: s.score_rows(rows_first), args.seconds)
        s._batches = sorted_batches
        torch.set_num_threads(1)
        variants["int8_one_thread"] = len(rows_first) / timed(lambda: s.score_rows(rows_first), args.seconds)
        torch.set_num_threads(default_threads)
    print(
        json.dumps(
            {
                "results": results,
                "variants_pairs_per_s": {k: round(v, 1) for k, v in variants.items()},
                "device": "cuda" if cuda else "cpu",
                "cpu_bf16_units": bf16_units(),
                "torch_threads": default_threads,
                "rows_per_call": args.rows,
                "adapters": args.adapters,
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
    )


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _rows_for(scorer: Any, names: list[str], texts: list[str], tables: list[Any], n: int) -> list[Any]:
    """Whole requests of 20 candidates (documents at the scorer's budget), businesses interleaved."""
    from assetmatch.ranking.finerank import LoraFineRanker
    from assetmatch.ranking.model import ScoreRow

    documents = LoraFineRanker(scorer).documents
    rng = random.Random(5)
    rows: list[ScoreRow] = []
    while len(rows) < n:
        text = rng.choice(texts)
        name = names[len(rows) // 20 % len(names)]
        rows.extend(ScoreRow(name, text, doc) for doc in documents(text, rng.sample(tables, 20)))
    return rows[:n]


if __name__ == "__main__":
    main()
