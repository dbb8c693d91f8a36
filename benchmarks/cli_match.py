"""Wall time of `assetmatch match` on the demo deployment, as a person at a terminal sees it.

Runs the real command line (a new process per call, as typed) five times with different requirements
of the demo's games, and prints the median wall time, the median CPU time of the child process
(user + system: what the call costs, whatever else the machine is doing) and the load average
before and after (`os.getloadavg()`). Every call is checked: exit code 0 and a selected set printed.

The demo deployment is built once if `--dir` holds none (`assetmatch demo`, the steps a match needs:
generate, ingest, features, index, train, promote; ~13 min on 2 cores), then reused. The first call
after a build or a change fills the command's caches and is shown apart (`--warmup 0` keeps it in
the figure).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cli_match.py --dir .assetmatch/demo
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REQUIREMENTS = [
    ("moba", "上周A渠道的付费用户数"),
    ("farm", "每天的活跃玩家数"),
    ("card", "weekly paying users by channel"),
    ("moba", "新用户的首次登录时间"),
    ("farm", "revenue per item last month"),
]
DEMO_STEPS = ["generate", "ingest", "features", "index", "train", "promote"]


def cli() -> list[str]:
    """The installed console script beside this interpreter (what a user types)."""
    script = Path(sys.executable).with_name("assetmatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "assetmatch.cli"]


def ensure_demo(folder: Path) -> Path:
    config = folder / "assetmatch.yaml"
    if config.exists() and (folder / "indexes").is_dir():
        return config
    print(f"building the demo in {folder} (steps: {', '.join(DEMO_STEPS)})", flush=True)
    steps = [arg for step in DEMO_STEPS for arg in ("--step", step)]
    subprocess.run([*cli(), "demo", "--dir", str(folder), *steps], check=True)
    return config


def one_call(config: Path, business: str, text: str, extra: list[str]) -> tuple[float, float, str]:
    """(wall s, child CPU s, last lines) of one `assetmatch match` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [*cli(), "-c", str(config), "match", text, "--business", business, *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0 or "selected:" not in done.stdout:
        raise SystemExit(
            f"`assetmatch match {text!r}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    tail = [
        line for line in done.stdout.splitlines() if line.startswith(("selected:", "fine ranker", "timings"))
    ]
    return wall, cpu, " | ".join(tail)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path(".assetmatch/demo"), help="the demo's folder")
    parser.add_argument("--calls", type=int, default=5, help="timed calls (requirements cycle)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (fill the caches)")
    parser.add_argument("--coarse-only", action="store_true", help="pass --coarse-only to every call")
    args = parser.parse_args()
    config = ensure_demo(args.dir)
    extra = ["--coarse-only"] if args.coarse_only else []
    load_before = os.getloadavg()
    for i in range(args.warmup):
        business, text = REQUIREMENTS[i % len(REQUIREMENTS)]
        wall, cpu, tail = one_call(config, business, text, extra)
        print(
            f"warm-up  {wall:6.2f} s wall {cpu:6.2f} s cpu  {business}: {text}\n         {tail}", flush=True
        )
    walls, cpus = [], []
    for i in range(args.calls):
        business, text = REQUIREMENTS[i % len(REQUIREMENTS)]
        wall, cpu, tail = one_call(config, business, text, extra)
        walls.append(wall)
        cpus.append(cpu)
        print(
            f"call {i + 1}   {wall:6.2f} s wall {cpu:6.2f} s cpu  {business}: {text}\n         {tail}",
            flush=True,
        )
    load_after = os.getloadavg()
    print(
        f"assetmatch match on the demo: median {statistics.median(walls):.2f} s wall, "
        f"{statistics.median(cpus):.2f} s cpu over {len(walls)} calls "
        f"(min {min(walls):.2f}, max {max(walls):.2f} s wall)"
    )
    print(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after "
        + ", ".join(f"{x:.2f}" for x in load_after)
        + f"; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
