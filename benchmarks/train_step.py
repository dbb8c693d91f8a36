"""Fine-ranker training speed on this machine: seconds per optimizer step of `fit_adapter` (the
production training loop) in float32 and under bf16 autocast (`RankerConfig.precision`), one after
the other in one process, on the same synthetic pairs (whole requirements of one gold and four
negative tables, documents built by the prompt builder training uses, at the token budget given).

bf16 pays on CPUs that multiply bf16 in hardware (AMX, AVX-512 BF16); elsewhere torch emulates it,
which is why `precision: auto` picks it only there (the JSON lists this CPU's bf16 units).
`--trainable-layers 0,3` times each precision again with only the top N layers' LoRA updates trained
(`RankerConfig.trainable_layers`; 0: every layer), `--precisions fp32` skips bf16.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/train_step.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps timed per precision")
    parser.add_argument("--max-length", type=int, default=64, help="token budget per pair (the demo's: 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--rounds", type=int, default=2, help="fp32 and bf16 alternated this many times")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="training precisions timed, comma-separated"
    )
    parser.add_argument(
        "--trainable-layers", default="0", help="top layers trained, comma-separated (0: every layer)"
    )
    args = parser.parse_args()

    from assetmatch.ranking.config import RankerConfig
    from assetmatch.ranking.model import bf16_units, load_base, new_adapter, seed_everything
    from assetmatch.ranking.prompt import document_budget, table_prompt, tokenizer_counter
    from assetmatch.serving.synthetic import synthetic_requirements, synthetic_tables
    from assetmatch.training.pairs import Pair
    from assetmatch.training.train import fit_adapter

    load_before = os.getloadavg()
    config = RankerConfig(
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_steps=args.steps,
        eval_every=0,
        lora_dropout=0.0,
        device="cpu",
    )
    tokenizer, _, _ = load_base(config.base, "cpu")
    count = tokenizer_counter(tokenizer)
    tables = synthetic_tables("bench", 200, seed=3)
    rng = random.Random(5)
    pairs: list[Pair] = []
    documents: dict[tuple[str, str], str] = {}
    for i, text in enumerate(synthetic_requirements(400, seed=4)):
        for j, table in enumerate(rng.sample(tables, 5)):
            pairs.append(
                Pair(f"r{i}", text, table.asset_id, 1.0 if j == 0 else 0.0, "positive" if j == 0 else "hard")
            )
            documents[(text, table.asset_id)] = table_prompt(
                text, table, document_budget(text, args.max_length, count), count
            )

    precisions = args.precisions.split(",")
    tops = [int(n) for n in args.trainable_layers.split(",")]
    runs = [(p, n) for p in precisions for n in tops]
    results: dict[str, list[float]] = {label(p, n): [] for p, n in runs}
    for _ in range(args.rounds):
        for precision, top in runs:
            run = replace(config, precision=precision, trainable_layers=top)
            seed_everything(run.seed)
            _, base, device = load_base(run.base, "cpu")
            model = new_adapter(base, run)
            stats = fit_adapter(model, tokenizer, pairs, documents, run, device)
            results[label(precision, top)].append(stats.seconds / stats.steps * 1000)
    best = {k: min(v) for k, v in results.items()}
    print(
        json.dumps(
            {
                "ms_per_step": {k: [round(x, 1) for x in v] for k, v in results.items()},
                "speedup_over_fp32": {k: round(best[label("fp32", tops[0])] / v, 2) for k, v in best.items()}
                if label("fp32", tops[0]) in best
                else {},
                "steps": args.steps,
                "max_length": args.max_length,
                "batch_size": args.batch_size,
                "cpu_bf16_units": bf16_units(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
    )


def label(precision: str, top: int) -> str:
    """A run's name: its precision, and the layers it trains where not all."""
    return precision if top == 0 else f"{precision}/top{top}"


if __name__ == "__main__":
    main()
