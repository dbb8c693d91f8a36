"""The demo, day after day: build time and the A/B gate's verdicts for several reference dates.

The demo's data follow the calendar (the query log covers the 90 days before its reference date),
so what the gate decides is a property of the day's data as much as of the code. This script runs
the product's own command for each date, one build after the other in a fresh folder:

    assetmatch demo --fresh --dir DIR/<date> --reference-date <date>

and then reads what the build recorded: its step times (`DIR/<date>/steps.json`, written by
`assetmatch demo`) and the gate's decisions (the lake's `promotions` table). It prints one row per
day — the steps' total, index / train / promote, each game's verdict with its set-F1 difference
against coarse-only, the 95 % interval and on how many requirements set F1 changed (better / worse:
a lower end of exactly zero with "3/0" is too few answers changed, not no gain), and the same for
the shared adapter where the gate judged it beside the game's own and did not choose it (its
verdict is on its MLflow version's tags) — then how many
days promoted a game and how many builds stayed inside the 10-minute budget. The load average is printed before each build: run it on a quiet
machine, alone.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_days.py --dates 2026-12-04 2026-12-05 2026-12-06
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_days.py --days 5 --last 2026-12-08

`--report-only` prints the same report from the builds already in `--dir`, building nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BUDGET_S = 600.0  # the demo's budget on a 2-core machine (the steps' total)


def dates_of(args: argparse.Namespace) -> list[str]:
    """--dates as given, else --days dates ending at --last (default: today)."""
    try:
        if args.dates:
            return [date.fromisoformat(d).isoformat() for d in args.dates]
        last = date.fromisoformat(args.last) if args.last else date.today()
    except ValueError as exc:
        raise SystemExit(f"not a YYYY-MM-DD date: {exc}") from exc
    return [(last - timedelta(days=n)).isoformat() for n in range(args.days - 1, -1, -1)]


def build(day: str, folder: Path, seed: int | None) -> float:
    """One fresh demo build for `day` into `folder` (its output in `folder`.log); its wall seconds."""
    script = Path(sys.executable).with_name("assetmatch")  # the venv's entry point, as a user runs it
    cli = (
        [str(script)] if script.exists() else [sys.executable, "-c", "from assetmatch.cli import app; app()"]
    )
    command = [
        *cli,
        "demo",
        "--fresh",
        "--dir",
        str(folder),
        "--reference-date",
        day,
        *(["--seed", str(seed)] if seed is not None else []),
    ]
    log = folder.parent / f"{folder.name}.log"
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the demo for {day} failed (exit {done.returncode}); its output: {log}")
    return time.perf_counter() - started


def verdicts(folder: Path) -> dict[str, dict[str, Any]]:
    """Each business's latest gate decision in the build's lake: verdict, version, set-F1 difference;
    and under "shared", the shared adapter's own verdict where the gate judged it too and it is not
    the decision recorded (the gate keeps a refused arm's verdict in MLflow, on its version's tags)."""
    from assetmatch.config import load_settings
    from assetmatch.lake import tables as T
    from assetmatch.lake.delta import Lake
    from assetmatch.registry.mlflow import Registry

    settings = load_settings(folder / "assetmatch.yaml")
    lake = Lake.from_settings(settings)
    latest: dict[str, dict[str, Any]] = {}
    for row in sorted(lake.read_arrow(T.PROMOTIONS).to_pylist(), key=lambda r: r["ts"]):
        latest[row["business"]] = _decision(
            row["verdict"], row["challenger_version"], json.loads(row["metrics"])
        )
    registry = Registry.from_settings(settings)
    for business, decision in latest.items():
        judged = [
            v
            for v in registry.versions(business)
            if (v.tags or {}).get("ranker.kind") == "shared" and "gate.metrics" in (v.tags or {})
        ]
        if judged:
            shared = max(judged, key=lambda v: int(v.version))
            if str(shared.version) != str(decision["version"]):
                decision["shared"] = _decision(
                    shared.tags["gate.verdict"], str(shared.version), json.loads(shared.tags["gate.metrics"])
                )
    return latest


def _decision(verdict: str, version: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "version": version,
        "set_f1": metrics.get("diffs", {}).get("set_f1"),
        "changed": metrics.get("changed"),  # absent in decisions recorded before the gate counted it
    }


def describe(decision: dict[str, Any]) -> str:
    """'promote v1 +0.021 [+0.005, +0.044] 5/1' (the set-F1 difference against coarse-only or the
    champion, and on how many requirements set F1 changed: better / worse), then the shared
    adapter's where it was judged beside it: '· shared refuse v1 +0.013 [+0.000, +0.031] 3/0'."""
    from assetmatch.registry.promotion import Interval  # printed as the gate prints it

    diff, changed = decision["set_f1"], decision.get("changed")
    evidence = f" {Interval(**diff)}" if diff else ""
    if changed:
        evidence += f" {changed['better']}/{changed['worse']}"
    shared = f" · shared {describe(decision['shared'])}" if "shared" in decision else ""
    return f"{decision['verdict']} v{decision['version']}{evidence}{shared}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dates", nargs="+", default=None, help="reference dates (YYYY-MM-DD), in order")
    parser.add_argument(
        "--days", type=int, default=3, help="without --dates: this many days ending at --last"
    )
    parser.add_argument(
        "--last", default=None, help="without --dates: the last reference date (default: today)"
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(".assetmatch/demo-days"), help="one build folder per date"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the demo generator's seed (default: the demo's)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="build nothing: report the builds already in --dir for these dates",
    )
    args = parser.parse_args()
    if not args.dates and args.days < 1:
        parser.error("--days must be at least 1")

    from assetmatch.demo.pipeline import STEPS_FILE

    args.dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, float, dict[str, float], dict[str, dict[str, Any]]]] = []
    for day in dates_of(args):
        folder = args.dir / day
        wall = 0.0
        if not args.report_only:
            print(f"{day}: building (load average {os.getloadavg()[0]:.2f})", flush=True)
            wall = build(day, folder, args.seed)
        if not (folder / STEPS_FILE).exists():
            raise SystemExit(f"{folder} holds no finished demo build ({STEPS_FILE} is missing)")
        steps = json.loads((folder / STEPS_FILE).read_text(encoding="utf-8"))
        seconds = {s["name"]: s["seconds"] for s in steps["steps"]}
        seconds["total"] = steps["total_seconds"]
        decisions = verdicts(folder)
        rows.append((day, wall, seconds, decisions))
        print(
            f"{day}: steps {seconds['total']:.1f} s"
            + (f" (process {wall:.1f} s)" if wall else "")
            + "; "
            + "; ".join(f"{b} {describe(d)}" for b, d in sorted(decisions.items())),
            flush=True,
        )

    businesses = sorted({b for *_, decisions in rows for b in decisions})
    print()
    print("| date | steps s | index / train / promote s | " + " | ".join(businesses) + " |")
    print("|---" * (3 + len(businesses)) + "|")
    for day, _, seconds, decisions in rows:
        parts = " / ".join(f"{seconds.get(name, 0.0):.1f}" for name in ("index", "train", "promote"))
        cells = [describe(decisions[b]) if b in decisions else "—" for b in businesses]
        print(f"| {day} | {seconds['total']:.1f} | {parts} | " + " | ".join(cells) + " |")
    promoted = [
        day for day, *_, decisions in rows if any(d["verdict"] == "promote" for d in decisions.values())
    ]
    over = [day for day, _, seconds, _ in rows if seconds["total"] > BUDGET_S]
    totals = [seconds["total"] for _, _, seconds, _ in rows]
    print(
        f"\na game promoted on {len(promoted)} of {len(rows)} days ({', '.join(promoted) or 'none'}); "
        f"steps {min(totals):.1f}-{max(totals):.1f} s, {len(over)} over the {BUDGET_S:.0f} s budget; "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
