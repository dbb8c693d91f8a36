"""Latency of POST /v1/match: p50 / p95 / p99 and requests/s at concurrency 1 and 16 over loopback,
with the share of answers the fine ranker ran on and the pairs it scored (from each response's
`fine_depth`), and the load average beside every figure.

Two deployments:

- synthetic (the default): 3 businesses with LoRA adapters, ~1,000 synthetic tables each, the fine
  ranker reranking the coarse top-20. The adapters are freshly initialised (untrained, seeded) LoRA
  adapters: latency does not depend on training.
- real (`--config assetmatch.yaml`): a deployment that exists — its lake, its published index and
  the champion adapters of its MLflow registry — served as `assetmatch serve` serves it, cascade,
  fusion and selection from each adapter's calibration. Requests are the lake's `requirements` of
  `--split` (text, business and scope as written, shuffled; `--scope database` asks each inside its
  gold tables' databases, as a Text2SQL session connected to them would). The config file is not changed: a copy with
  the benchmark's serving options is written to the work folder. A business without a champion is
  answered coarse-only, and the run says so.

The response cache is off in both, and so is the per-process cache of query vectors (the same texts
are replayed). `--quantize none,int8` serves the same deployment once per value of
`ranker.quantize`, one after the other. `--arm challenger` sends every request to the challenger
adapters (A/B share 1.0 and a user id on each request): the trained adapters that the gate has not
promoted yet, without touching the registry; `--arm champion,challenger` measures both. An arm
without adapters is coarse-only, so it is measured once, whatever `--quantize` says. An adapter's
calibrated cascade may never ask it (it did not beat the coarse answer on validation): then the run
measures the coarse path, and each row's `fine_share` says so; `--cascade always` (with
`--fine-top-n`) measures the same adapters fine-ranking every request. Run with `nice`:

    nice .venv/bin/python benchmarks/serve_latency.py --seconds 30
    nice .venv/bin/python benchmarks/serve_latency.py --config DEPLOY/assetmatch.yaml --seconds 20 \\
        --quantize none,int8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

KEY = "bench"
# what the serving figure asks of a real deployment on one machine
TARGET_C1_P50_MS, TARGET_C1_P99_MS, TARGET_C16_RPS = 60.0, 200.0, 20.0


@dataclass
class Workload:
    """What the clients send: synthetic texts cycled over businesses, or real (business, text) pairs."""

    businesses: Sequence[str]
    requirements: Sequence[str]
    items: Sequence[tuple[str, str, Sequence[str] | None]] | None = None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="serve this deployment (real mode) instead of a synthetic one",
    )
    parser.add_argument("--split", default="test", help="real mode: requirements split to send")
    parser.add_argument(
        "--max-requirements", type=int, default=0, help="real mode: send at most this many (0: all)"
    )
    parser.add_argument(
        "--scope",
        choices=["recorded", "none", "database"],
        default="recorded",
        help="real mode: the `databases` each request sends: the requirement's own (recorded), none "
        "(the whole library), or its gold tables' databases (database: a Text2SQL session connected to them)",
    )
    parser.add_argument("--tables", type=int, default=1000, help="synthetic tables per business")
    parser.add_argument("--seconds", type=float, default=30, help="load duration per concurrency level")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--paths", default="lexical,dense,graph", help="synthetic mode: recall paths")
    parser.add_argument(
        "--batch-mode", default=None, choices=["mixed", "serial"], help="default: mixed (real: the config's)"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="token budget of one pair (default: 128; real: the config's)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="model intra-op threads (0: torch's default; default 0, real: the config's)",
    )
    parser.add_argument(
        "--torch-threads-alone",
        type=int,
        default=None,
        help="serving.torch_threads_alone: model threads of a batch every request being computed waits "
        "on (0: never switch; default: the config's)",
    )
    parser.add_argument(
        "--quantize",
        default="",
        help="comma-separated ranker.quantize values to serve one after the other, e.g. none,int8 "
        "(default: the deployment's own setting)",
    )
    parser.add_argument(
        "--arm", default="champion", help="comma-separated A/B arms to serve: champion, challenger"
    )
    parser.add_argument(
        "--fine-wait-budget-ms",
        type=float,
        default=None,
        help="serving.fine_wait_budget_ms (0: never shed fine ranking under load, so requests/s is "
        "measured with fine ranking really on; default: the config's)",
    )
    parser.add_argument(
        "--max-concurrent-matches",
        type=int,
        default=None,
        help="serving.max_concurrent_matches (requests computed at once; 0: two per core; default: the config's)",
    )
    parser.add_argument(
        "--cascade",
        default=None,
        choices=["calibrated", "never", "always"],
        help="real mode: matching.cascade (always: every request the adapters learned is fine-ranked, "
        "whatever their calibrated cascade chose, so the fine stage is measured under load even when "
        "validation told it to defer; default: the config's)",
    )
    parser.add_argument(
        "--fine-top-n",
        type=int,
        default=None,
        help="real mode: matching.fine_top_n (tables fine-ranked per request when the calibrated "
        "cascade sets no depth; default: the config's)",
    )
    parser.add_argument("--k", type=int, default=10, help="ranked tables asked per request")
    parser.add_argument("--workdir", type=Path, default=None, help="reuse/keep the deployment here")
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="serve-latency-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {_load()}")
    if args.config:
        workload, make_config, summary = real_deployment(args, root)
    else:
        workload, make_config, summary = synthetic(args, root)
    quantize = [q.strip() for q in args.quantize.split(",") if q.strip()] or [""]
    arms = [a.strip() for a in args.arm.split(",") if a.strip()]
    if not arms or set(arms) - {"champion", "challenger"}:
        raise SystemExit("--arm: champion and/or challenger")
    runs = {}
    for arm in arms:
        for value in quantize:
            label = f"{arm}_{value or 'configured'}" if len(arms) > 1 else value or "configured"
            print(f"\n== arm: {arm}, ranker.quantize: {value or '(as configured)'}")
            config = make_config(value, arm == "challenger")
            run = serve_and_measure(config, workload, args, root / f"server-{label}.log", arm)
            runs[label] = run
            if not run["adapters"]:
                break  # coarse-only: quantization changes nothing
    if len(runs) == 1:
        summary.update(next(iter(runs.values())))
    else:
        summary.update({f"run_{label}": run for label, run in runs.items()})
    print(json.dumps(summary, indent=2, ensure_ascii=False))


def synthetic(
    args: argparse.Namespace, root: Path
) -> tuple[Workload, Callable[[str, bool], Path], dict[str, Any]]:
    from assetmatch.serving.auth import hash_key
    from assetmatch.serving.loadgen import write_config
    from assetmatch.serving.synthetic import synthetic_deployment, synthetic_requirements

    businesses = ("game_a", "game_b", "game_c")
    t0 = time.perf_counter()
    settings = synthetic_deployment(
        root / "deploy", businesses, tables=args.tables, paths=args.paths.split(",")
    )
    settings.ranker.max_length = args.max_length or 128
    batch_mode = args.batch_mode or "mixed"
    print(f"deployment: {len(businesses)} x {args.tables} tables, built in {time.perf_counter() - t0:.0f}s")

    def make_config(quantize: str, challenger: bool) -> Path:
        if quantize:
            settings.ranker.quantize = quantize  # type: ignore[assignment]
        serving: dict[str, Any] = {
            "api_keys": {hash_key(KEY): ["*"]},
            "cache_size": 0,
            "batch_mode": batch_mode,
            "reload_interval_s": 0,
            "torch_threads": args.torch_threads or 0,
        }
        for key in ("fine_wait_budget_ms", "max_concurrent_matches", "torch_threads_alone"):
            if getattr(args, key) is not None:
                serving[key] = getattr(args, key)
        if challenger:
            serving["ab_split"] = dict.fromkeys(businesses, 1.0)
        return write_config(settings, root / f"assetmatch-{quantize or 'default'}.yaml", serving)

    workload = Workload(businesses, synthetic_requirements(500, seed=1))
    return workload, make_config, {"batch_mode": batch_mode, "tables_per_business": args.tables}


def real_deployment(
    args: argparse.Namespace, root: Path
) -> tuple[Workload, Callable[[str, bool], Path], dict[str, Any]]:
    import yaml

    from assetmatch.config import load_settings
    from assetmatch.evaluation.harness import asked_in
    from assetmatch.lake.delta import Lake
    from assetmatch.serving.auth import hash_key
    from assetmatch.serving.loadgen import Item

    source = args.config.resolve()
    settings = load_settings(source)
    served = {b.name for b in settings.businesses if not b.shared}
    limit = settings.serving.max_requirement_chars
    lake = Lake.from_settings(settings)
    requirements = lake.read_requirements(split=args.split)
    if args.scope != "recorded":  # each asked in its gold tables' databases, or in the whole library
        assets = {a.asset_id: a for a in lake.read_assets(businesses=sorted(served))}
        requirements = asked_in(requirements, args.scope, assets)
    items: list[Item] = [
        (r.business, r.text, r.databases)
        for r in requirements
        if r.business in served and len(r.text) <= limit
    ]
    if not items:
        raise SystemExit(f"no {args.split!r} requirements of {sorted(served)} in the lake of {source}")
    random.Random(0).shuffle(items)
    if args.max_requirements:
        items = items[: args.max_requirements]
    per_business = {b: sum(1 for i in items if i[0] == b) for b in sorted(served)}
    scoped = sum(1 for i in items if i[2])
    print(
        f"deployment: {source}; {len(items)} {args.split!r} requirements {per_business}, "
        f"{scoped} asked inside their databases (--scope {args.scope})"
    )
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}

    def make_config(quantize: str, challenger: bool) -> Path:
        serving = {
            **(data.get("serving") or {}),
            "api_keys": {hash_key(KEY): ["*"]},
            "require_api_key": True,
            "cache_size": 0,
            "redis_cache_url": None,
            "reload_interval_s": 0,
        }
        if challenger:
            serving["ab_split"] = dict.fromkeys(sorted(served), 1.0)
        for key, value in (
            ("batch_mode", args.batch_mode),
            ("torch_threads", args.torch_threads),
            ("torch_threads_alone", args.torch_threads_alone),
            ("fine_wait_budget_ms", args.fine_wait_budget_ms),
            ("max_concurrent_matches", args.max_concurrent_matches),
        ):
            if value is not None:
                serving[key] = value
        ranker = dict(data.get("ranker") or {})
        if quantize:
            ranker["quantize"] = quantize
        if args.max_length:
            ranker["max_length"] = args.max_length
        path = (
            root / f"assetmatch-{'challenger' if challenger else 'champion'}-{quantize or 'configured'}.yaml"
        )
        # the same few hundred texts are replayed: keep no query vectors between requests, as the
        # response cache is off, so each request costs what a new one would
        recall = {**(data.get("recall") or {}), "cache_query_vectors": False}
        matching = dict(data.get("matching") or {})
        for key, value in (("cascade", args.cascade), ("fine_top_n", args.fine_top_n)):
            if value is not None:
                matching[key] = value
        path.write_text(
            yaml.safe_dump(
                {**data, "recall": recall, "ranker": ranker, "serving": serving, "matching": matching},
                sort_keys=False,
                allow_unicode=True,
            ),
            encoding="utf-8",
        )
        load_settings(path)  # fail here, not in the server, on a bad combination
        return path

    workload = Workload(sorted(served), [], items)
    return (
        workload,
        make_config,
        {
            "config": str(source),
            "split": args.split,
            "scope": args.scope,
            "requirements": len(items),
            "scoped_requirements": scoped,
            "cascade": args.cascade or "(as configured)",
            "fine_top_n": args.fine_top_n or "(as configured)",
        },
    )


def serve_and_measure(
    config: Path, workload: Workload, args: argparse.Namespace, log: Path, arm: str = "champion"
) -> dict[str, Any]:
    from assetmatch.serving.loadgen import ServerProcess, drive, free_port, percentiles

    def run(level: int, seconds: float) -> Any:
        return asyncio.run(
            drive(
                server.url,
                KEY,
                workload.businesses,
                workload.requirements,
                level,
                seconds,
                k=args.k,
                items=workload.items,
                user_id="bench-user" if arm == "challenger" else None,
            )
        )

    server = ServerProcess(config, free_port(), log)
    results: dict[str, Any] = {}
    try:
        ready = server.wait_ready()
        adapters = {f"{b} v{v}" for b, a, v in ready["models"] if a == arm}
        results["arm"], results["adapters"] = arm, sorted(adapters)
        print(
            f"server ready: {ready['adapters_loaded']} adapters loaded, {arm} adapters "
            f"{sorted(adapters) or 'none'}, index {ready['index_version']}"
        )
        if not adapters:
            print(f"NOTE: no {arm} adapter in the registry: every answer is COARSE-ONLY")
        run(2, 5)  # warm-up
        for level in [int(c) for c in args.concurrency.split(",")]:
            before = _load()
            samples = run(level, args.seconds)
            ok = [s for s in samples if s.status == 200]
            stats: dict[str, Any] = percentiles(samples)
            stats["errors"] = sum(s.status != 200 for s in samples)
            stats["throughput_rps"] = len(ok) / args.seconds
            stats["fine_share"] = sum(s.fine_depth > 0 for s in ok) / max(len(ok), 1)
            stats["fine_pairs_mean"] = sum(s.fine_depth for s in ok) / max(len(ok), 1)
            stats["shed_share"] = sum(s.degraded for s in ok) / max(len(ok), 1)  # fine skipped for load
            stats["loadavg_before"] = before
            stats["loadavg_after"] = _load()
            results[f"concurrency_{level}"] = stats
            print(f"concurrency {level:>3}: " + json.dumps({k: _round(v) for k, v in stats.items()}))
        results["batches"] = server_metrics(server.url)
        print("mean rows per model batch:", results["batches"])
        _targets(results)
    finally:
        print("server exit code:", server.stop())
    return results


def _targets(results: dict[str, Any]) -> None:
    one, many = results.get("concurrency_1"), results.get("concurrency_16")
    if one and "p50_ms" in one:
        ok = one["p50_ms"] <= TARGET_C1_P50_MS and one["p99_ms"] <= TARGET_C1_P99_MS
        print(
            f"concurrency 1: p50 {one['p50_ms']:.1f} ms (target <= {TARGET_C1_P50_MS:.0f}), p99 "
            f"{one['p99_ms']:.1f} ms (target <= {TARGET_C1_P99_MS:.0f}): {'met' if ok else 'MISSED'}"
        )
    if many:
        ok = many["throughput_rps"] >= TARGET_C16_RPS
        print(
            f"concurrency 16: {many['throughput_rps']:.1f} requests/s (target >= {TARGET_C16_RPS:.0f}): "
            f"{'met' if ok else 'MISSED'}"
        )


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _round(value: Any) -> Any:
    return round(value, 3 if abs(value) < 10 else 1) if isinstance(value, float) else value


def server_metrics(url: str) -> dict[str, Any]:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    values = {}
    by_threads: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("assetmatch_batch_threads_total{"):  # batches by the torch threads they ran on
            by_threads[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        for name in (
            "assetmatch_batch_rows_sum",
            "assetmatch_batch_rows_count",
            "assetmatch_batch_requests_sum",
            "assetmatch_batch_seconds_sum",
        ):
            if line.startswith(name + "{"):
                values[name] = float(line.rsplit(" ", 1)[1])
    count = values.get("assetmatch_batch_rows_count", 0) or 1
    return {
        "rows_per_batch": values.get("assetmatch_batch_rows_sum", 0) / count,
        "requests_per_batch": values.get("assetmatch_batch_requests_sum", 0) / count,
        "batch_ms_mean": 1000 * values.get("assetmatch_batch_seconds_sum", 0) / count,
        "batches": values.get("assetmatch_batch_rows_count", 0),
        "batches_by_threads": by_threads,
    }


if __name__ == "__main__":
    main()
