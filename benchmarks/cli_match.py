"""Wall time of `assetmatch match` on the demo deployment, as a person at a terminal sees it.

Runs the real command line (a new process per call, as typed) five times with different requirements
of the demo's games, and prints the median wall time, the median CPU time of the child process
(user + system: what the call costs, whatever else the machine is doing) and the load average
before and after (`os.getloadavg()`). Every call is checked: exit code 0 and a selected set printed.

The demo deployment is built once if `--dir` holds none (`assetmatch demo`, the steps a match needs:
generate, ingest, features, index, train, promote; ~13 min on 2 cores), then reused. The first call
after a build or a change fills the command's caches and is shown apart (`--warmup 0` keeps it in
the figure).

`--before SRC` also times another version of the code on the same calls, e.g. the `src` folder of a
`git worktree` of an earlier commit (put first on PYTHONPATH of those calls); the two versions
alternate call by call, so both see the same machine, and both medians are printed.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cli_match.py --dir .assetmatch/demo
    git worktree add /tmp/before HEAD~1
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cli_match.py --dir .assetmatch/demo --before /tmp/before/src
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
    return (
        [str(script)] if script.exists() else [sys.executable, "-c", "from assetmatch.cli import app; app()"]
    )


def version_env(src: Path | None) -> dict[str, str]:
    """The environment of a call: this checkout's code, or the code in `src` first on the path."""
    env = {**os.environ, "COLUMNS": "160"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    return env


def ensure_demo(folder: Path) -> Path:
    config = folder / "assetmatch.yaml"
    if config.exists() and (folder / "indexes").is_dir():
        return config
    print(f"building the demo in {folder} (steps: {', '.join(DEMO_STEPS)})", flush=True)
    steps = [arg for step in DEMO_STEPS for arg in ("--step", step)]
    subprocess.run([*cli(), "demo", "--dir", str(folder), *steps], check=True)
    return config


def one_call(
    config: Path, business: str, text: str, extra: list[str], env: dict[str, str]
) -> tuple[float, float, str]:
    """(wall s, child CPU s, last lines) of one `assetmatch match` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [*cli(), "-c", str(config), "match", text, "--business", business, *extra],
        capture_output=True,
        text=True,
        env=env,
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
    parser.add_argument(
        "--before", type=Path, default=None, help="also time the code in this src folder (alternating)"
    )
    args = parser.parse_args()
    if args.before is not None and not (args.before / "assetmatch" / "__init__.py").exists():
        raise SystemExit(
            f"--before {args.before}: no assetmatch package there (give a checkout's src folder)"
        )
    config = ensure_demo(args.dir)
    extra = ["--coarse-only"] if args.coarse_only else []
    versions = (
        {"after": version_env(None)}
        if args.before is None
        else {
            "before": version_env(args.before),
            "after": version_env(None),
        }
    )
    label = {name: "" if args.before is None else f"{name:<6} " for name in versions}
    load_before = os.getloadavg()
    for i in range(args.warmup):
        business, text = REQUIREMENTS[i % len(REQUIREMENTS)]
        for name, env in versions.items():
            wall, cpu, tail = one_call(config, business, text, extra, env)
            print(
                f"warm-up  {label[name]}{wall:6.2f} s wall {cpu:6.2f} s cpu  {business}: {text}\n         {tail}",
                flush=True,
            )
    walls: dict[str, list[float]] = {name: [] for name in versions}
    cpus: dict[str, list[float]] = {name: [] for name in versions}
    for i in range(args.calls):
        business, text = REQUIREMENTS[i % len(REQUIREMENTS)]
        order = list(versions) if i % 2 == 0 else list(reversed(versions))  # neither always goes first
        for name in order:
            wall, cpu, tail = one_call(config, business, text, extra, versions[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(
                f"call {i + 1}   {label[name]}{wall:6.2f} s wall {cpu:6.2f} s cpu  {business}: {text}\n"
                f"         {tail}",
                flush=True,
            )
    load_after = os.getloadavg()
    for name in versions:
        what = (
            ""
            if args.before is None
            else f" ({name}: {args.before if name == 'before' else 'this checkout'})"
        )
        print(
            f"assetmatch match on the demo{what}: median {statistics.median(walls[name]):.2f} s wall, "
            f"{statistics.median(cpus[name]):.2f} s cpu over {len(walls[name])} calls "
            f"(min {min(walls[name]):.2f}, max {max(walls[name]):.2f} s wall)"
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
