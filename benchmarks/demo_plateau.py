"""The demo's adapters trained to their validation plateau, then judged as the A/B gate judges them.

On two CPU cores the demo trains each adapter for about half a pass (`demo.warehouse.DEMO_RANKER`),
and `finerank_demo.py --simulate` shows what the unchanged gate would need to promote one: an
adapter that orders the held-out lists about as well as the coarse ranking does (in-list ROC AUC
~0.98), with mistakes of its own. This script asks whether the default base, trained until its
validation curve stops improving (a GPU's worth of steps), gets there:

1. builds the demo into --dir unless it holds one: its data, lake, features and coarse model
   (`assetmatch demo --fresh --reference-date DATE --step generate ... --step index`; its own
   half-pass training is skipped);
2. writes DIR/plateau.yaml: the demo's config with the shared and per-game adapters trained until
   the plateau (`eval_every`, `patience`, a `max_steps` cap) on --device;
3. `assetmatch --config DIR/plateau.yaml train --force`: the shared adapter, then each game's;
4. `finerank_demo.py --config DIR/plateau.yaml`: the adapters beside coarse-only, with the gate's
   verdicts (`--simulate D ...` adds simulated adapters of those strengths); then `assetmatch
   promote` (the real gate).

Every step is the product's own command; each step's wall time is printed.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_plateau.py --dir .assetmatch/demo-plateau --device cuda
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent


def plateau_config(
    demo: dict[str, Any],
    device: str,
    max_steps: int,
    shared_steps: int,
    eval_every: int,
    patience: int,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo's config with both adapters trained until their validation plateau on `device`
    (and any other `training.ranker` settings in `overrides`, for both)."""
    config = dict(demo)
    config["ranker"] = {**demo.get("ranker", {}), "device": device}
    training = dict(demo.get("training", {}))
    until_plateau = {**(overrides or {}), "eval_every": eval_every, "patience": patience}
    training["ranker"] = {**training.get("ranker", {}), **until_plateau, "max_steps": max_steps}
    training["shared_ranker"] = {
        **training.get("shared_ranker", {}),
        **until_plateau,
        "max_steps": shared_steps,
    }
    config["training"] = training
    return config


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(step: str, command: list[str]) -> None:
    """One step: the command's output as it comes, then its wall time; a failed step ends the run."""
    print(f"== {step}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, check=False)
    print(f"== {step}: exit {done.returncode} after {time.perf_counter() - started:.0f} s", flush=True)
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(".assetmatch/demo-plateau"), help="the demo's folder"
    )
    parser.add_argument("--reference-date", default="2026-12-05", help="the demo's 'today' when it is built")
    parser.add_argument("--device", default="auto", help="where the adapters train: auto | cpu | cuda")
    parser.add_argument("--max-steps", type=int, default=1000, help="cap on each game's adapter's steps")
    parser.add_argument("--shared-steps", type=int, default=600, help="cap on the shared adapter's steps")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between validation checks")
    parser.add_argument("--patience", type=int, default=3, help="checks without improvement before stopping")
    parser.add_argument(
        "--simulate", type=float, nargs="+", default=[], metavar="D", help="finerank_demo.py --simulate D ..."
    )
    parser.add_argument(
        "--ranker",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another training.ranker setting for both adapters, e.g. past_requests=false (repeatable)",
    )
    args = parser.parse_args()
    if any("=" not in item for item in args.ranker):  # before the demo's minutes of building
        parser.error(f"--ranker takes KEY=VALUE, got {args.ranker}")

    import yaml

    bin_dir = Path(sys.executable).parent
    assetmatch = str(bin_dir / "assetmatch")
    demo_config = args.dir / "assetmatch.yaml"
    print(load_average(), flush=True)
    if not demo_config.exists():
        steps = [arg for step in ("generate", "ingest", "features", "index") for arg in ("--step", step)]
        build = ["demo", "--dir", str(args.dir), "--fresh", "--reference-date", args.reference_date, *steps]
        run("build the demo up to its coarse model", [assetmatch, *build])
    demo = yaml.safe_load(demo_config.read_text(encoding="utf-8"))
    config_path = args.dir / "plateau.yaml"
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.ranker)}
    config = plateau_config(
        demo, args.device, args.max_steps, args.shared_steps, args.eval_every, args.patience, overrides
    )
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    print(
        f"training: {config['training']['ranker']}; shared: {config['training']['shared_ranker']}", flush=True
    )
    run("train to the plateau", [assetmatch, "--config", str(config_path), "train", "--force"])
    run(
        "judge",
        [
            sys.executable,
            str(HERE / "finerank_demo.py"),
            "--config",
            str(config_path),
            *(["--simulate", *(f"{d:g}" for d in args.simulate)] if args.simulate else []),
        ],
    )
    run("gate", [assetmatch, "--config", str(config_path), "promote"])
    print(load_average(), flush=True)


if __name__ == "__main__":
    main()
