"""Cold start on Spider: the label-free point and the learning curve as labels arrive, in one run.

Each point is one `assetmatch eval` run (`evaluation.harness.run_eval`) on the evaluated split:
- `label-free`: fitted only on requirements synthesized from the library's metadata;
- `N labels`: N labelled `train` requirements (a seeded sample) blended with the synthetic ones
  (`matching.synthetic: auto`, the product default: synthetic share m / (m + N));
- `N labels, no synthetic`: the same N labelled requirements alone, for reference.
Prints all-gold@5, set F1/exact and MRR per point, the synthesis + fit seconds, and the load average.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/cold_start_curve.py \
        --dataset ../shared/benchmarks/spider --split dev --labels 0 50 200 1500
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from assetmatch.config import Settings
from assetmatch.evaluation.harness import EvalOptions, EvalRun, run_eval

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "spider"
COLUMNS = ("all_gold_at_3", "all_gold_at_5", "set_f1", "set_exact_match", "mrr")


def point(dataset: Path, split: str, workdir: Path, labels: int, synthetic: str) -> EvalRun:
    settings = Settings.model_validate({"matching": {"synthetic": synthetic}})
    options = EvalOptions(
        dataset=dataset,
        split=split,
        label_free=labels == 0,
        fit_limit=None if labels == 0 else labels,
        workdir=workdir,
    )
    return run_eval(options, settings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--labels", type=int, nargs="+", default=[0, 50, 200, 1500])
    parser.add_argument(
        "--no-reference", action="store_true", help="Skip the labelled-only reference points."
    )
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="assetmatch-cold-start-") as tmp:
        workdir = Path(tmp)  # one folder: the table embeddings are computed once and reused
        plan = [(n, "auto") for n in args.labels]
        if not args.no_reference:
            plan += [(n, "off") for n in args.labels if n > 0]
        for labels, synthetic in plan:
            run = point(args.dataset, args.split, workdir, labels, synthetic)
            name = (
                "label-free"
                if labels == 0
                else f"{labels} labels" + (", no synthetic" if synthetic == "off" else "")
            )
            row = {
                "point": name,
                "n_labelled": run.fit.get("n_labelled", 0),
                "n_synthetic": run.fit.get("n_synthetic", 0),
                **{k: run.metrics.get(k, float("nan")) for k in COLUMNS},
                "synthesize_fit_s": run.timings_s.get("synthesize_s", 0.0) + run.timings_s.get("fit_s", 0.0),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\n{args.dataset.name} {args.split}, union, load average {os.getloadavg()[0]:.2f}")
    print(
        "| point | labelled | synthetic | all-gold@3 | all-gold@5 | set F1 | set exact | MRR | synth+fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['point']} | {r['n_labelled']} | {r['n_synthetic']} | {r['all_gold_at_3']:.3f} | "
            f"{r['all_gold_at_5']:.3f} | {r['set_f1']:.3f} | {r['set_exact_match']:.3f} | {r['mrr']:.3f} | "
            f"{r['synthesize_fit_s']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
