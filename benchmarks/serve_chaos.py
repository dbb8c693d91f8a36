"""Chaos on loopback: `assetmatch serve` under load at concurrency 16 while faults are injected in turn.

A demo-like deployment (three games and a shared library of synthetic tables, an untrained seeded
LoRA champion per game in MLflow, a Redis response cache of its own, keys in a keys file) is
served in a child process with the reload and key watchers every 2 s. Clients send /v1/match and,
for every answer, /v1/feedback naming a table of that answer; every 10th match uses a second key
(allowed one game only). Every `--fault-every` seconds the next fault (`assetmatch.serving.faults`)
is injected and undone half an interval later:

1. an inconsistent index published (assets list cut in half),
2. the champion alias of one game moved to a corrupt version (garbage weights),
3. Redis stopped, then started again,
4. the lake's feedback table made unwritable, then writable,
5. the second key revoked from the keys file, then restored.

Reported: every status seen (200, or the documented 401 for the revoked key / 503), the 500s (must
be 0) and transport errors, p50/p99 and the share of degraded answers per phase, whether each
refused reload was reported on /readyz and cleared after the undo, feedback rows accepted vs
counted back from the lake once the server has stopped (lost, duplicated, mis-attributed), and the
load average. Run with `nice`:

    nice .venv/bin/python benchmarks/serve_chaos.py --seconds 300 --fault-every 30
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUSINESSES = ("moba", "farm", "card")
MAIN_KEY, VICTIM_KEY = "chaos-bench", "chaos-victim"
DOCUMENTED = {200, 401, 503}  # 401: the revoked key; 503: not ready / shutting down
FAULTS = ("inconsistent-index", "corrupt-adapter", "redis-down", "lake-unwritable", "key-revoked")


@dataclass
class Shot:
    start: float
    latency_s: float
    status: int
    phase: str
    key: str
    degraded: bool = False


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300, help="load duration")
    parser.add_argument("--fault-every", type=float, default=30, help="seconds between two faults")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tables", type=int, default=300, help="synthetic tables per game")
    parser.add_argument("--paths", default="lexical,dense,graph", help="recall paths")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from assetmatch.config import ServingConfig
    from assetmatch.serving import faults
    from assetmatch.serving.loadgen import ServerProcess, free_port, write_config
    from assetmatch.serving.synthetic import synthetic_deployment, synthetic_requirements

    started = time.time()
    load_before = os.getloadavg()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="serve-chaos-"))
    settings = synthetic_deployment(
        root / "deploy", BUSINESSES, tables=args.tables, shared="common", paths=args.paths.split(",")
    )
    settings.ranker.max_length = args.max_length
    redis = faults.PrivateRedis(free_port(), root / "redis.log")
    redis.start()
    keys_file = root / "keys.yaml"
    keys_file.write_text(
        json.dumps({digest(MAIN_KEY): ["*"], digest(VICTIM_KEY): [BUSINESSES[0]]}), encoding="utf-8"
    )
    can_revoke = "api_keys_file" in ServingConfig.model_fields
    serving: dict[str, Any] = {
        "api_keys": {} if can_revoke else {digest(MAIN_KEY): ["*"], digest(VICTIM_KEY): [BUSINESSES[0]]},
        "redis_cache_url": redis.url,
        "reload_interval_s": 2,
        "feedback_flush_interval_s": 2,
        "torch_threads": args.torch_threads,
    }
    if can_revoke:
        serving["api_keys_file"] = str(keys_file)
    config = write_config(settings, root / "assetmatch.yaml", serving)
    server = ServerProcess(config, free_port(), root / "server.log")
    requirements = synthetic_requirements(1000, seed=5)
    shots: list[Shot] = []
    feedback: dict[str, str] = {}  # accepted request id -> business
    feedback_status: Counter[int] = Counter()
    fault_log: list[dict[str, Any]] = []
    phase = "baseline"

    async def run_load(http: Any, url: str) -> None:
        begin = time.perf_counter()
        counter = 0

        async def client() -> None:
            nonlocal counter
            while time.perf_counter() - begin < args.seconds:
                counter += 1
                n = counter
                victim = n % 10 == 0
                business = BUSINESSES[0] if victim else BUSINESSES[n % len(BUSINESSES)]
                key = VICTIM_KEY if victim else MAIN_KEY
                body = {"business": business, "requirement": f"{requirements[n % len(requirements)]} #{n}"}
                t0 = time.perf_counter()
                current = phase
                try:
                    response = await http.post(f"{url}/v1/match", json=body, headers={"X-API-Key": key})
                    status, answer = (
                        response.status_code,
                        (response.json() if response.status_code == 200 else {}),
                    )
                except Exception:  # a transport error counts as a failure (status 0)
                    status, answer = 0, {}
                shots.append(
                    Shot(
                        t0 - begin,
                        time.perf_counter() - t0,
                        status,
                        current,
                        key,
                        bool(answer.get("degraded")),
                    )
                )
                if status != 200 or not answer.get("tables"):
                    continue
                used = answer["selected"][:1] or [answer["tables"][0]["asset_id"]]
                try:
                    sent = await http.post(
                        f"{url}/v1/feedback",
                        json={"request_id": answer["request_id"], "used_assets": used},
                        headers={"X-API-Key": key},
                    )
                    feedback_status[sent.status_code] += 1
                    if sent.status_code == 200:
                        feedback[answer["request_id"]] = business
                except Exception:
                    feedback_status[0] += 1

        await asyncio.gather(*(client() for _ in range(args.concurrency)))

    async def inject(name: str) -> faults.Fault | None:
        if name == "inconsistent-index":
            return await asyncio.to_thread(faults.publish_inconsistent_index, settings.recall.index_root)
        if name == "corrupt-adapter":
            return await asyncio.to_thread(
                faults.move_alias_to_corrupt_version, settings, BUSINESSES[1], "champion", "weights"
            )
        if name == "redis-down":
            return await asyncio.to_thread(redis.outage)
        if name == "lake-unwritable":
            return faults.make_lake_table_unwritable(settings.lake.uri, "feedback")
        if not can_revoke:
            print("note: this build cannot re-read keys (no serving.api_keys_file): key revocation skipped")
            return None
        return faults.revoke_key(keys_file, digest(VICTIM_KEY))

    async def readyz(http: Any, url: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = (await http.get(f"{url}/readyz")).json()
            return body
        except Exception as exc:
            return {"error": type(exc).__name__}

    async def chaos(http: Any, url: str) -> None:
        nonlocal phase
        for i, name in enumerate(FAULTS):
            at = (i + 1) * args.fault_every
            if at >= args.seconds:
                print(f"note: fault {name} not injected: the run ends at {args.seconds:.0f}s")
                continue
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - load_begin)))
            before = await readyz(http, url)
            fault = await inject(name)
            phase = name
            entry: dict[str, Any] = {"fault": name, "at_s": round(time.perf_counter() - load_begin, 1)}
            if fault is not None:
                entry["detail"] = fault.detail
            seen_errors: set[str] = set()
            kept = True
            hold = args.fault_every / 2
            while time.perf_counter() - load_begin < at + hold:
                state = await readyz(http, url)
                if state.get("reload_error"):
                    seen_errors.add(str(state["reload_error"])[:160])
                kept = kept and state.get("index_version") == before.get("index_version")
                await asyncio.sleep(0.5)
            if fault is not None:
                await asyncio.to_thread(fault.undo)
            undone = time.perf_counter()
            phase = f"{name}: undone"
            # until the next fault: how long until /readyz no longer reports a reload error
            cleared: float | None = None
            while time.perf_counter() - load_begin < min(at + args.fault_every - 1, args.seconds):
                if not (await readyz(http, url)).get("reload_error"):
                    cleared = time.perf_counter() - undone
                    break
                await asyncio.sleep(0.5)
            entry["index_kept"] = kept
            entry["reload_error_seen"] = sorted(seen_errors)
            entry["reload_error_cleared_after_undo_s"] = round(cleared, 1) if cleared is not None else None
            fault_log.append(entry)

    load_begin = 0.0

    async def run(url: str) -> None:
        nonlocal load_begin
        import httpx

        limits = httpx.Limits(
            max_connections=args.concurrency + 2, max_keepalive_connections=args.concurrency + 2
        )
        async with httpx.AsyncClient(limits=limits, timeout=120) as http:
            load_begin = time.perf_counter()
            await asyncio.gather(run_load(http, url), chaos(http, url))

    exit_code = None
    try:
        server.wait_ready()
        load_start = os.getloadavg()
        asyncio.run(run(server.url))
        load_end = os.getloadavg()
    finally:
        exit_code = server.stop()
        redis.stop()

    from assetmatch.lake import tables as T
    from assetmatch.lake.delta import Lake

    rows = Lake.from_settings(settings).read_arrow(T.FEEDBACK).to_pylist()
    in_lake = Counter(r["request_id"] for r in rows)
    statuses = Counter(s.status for s in shots)
    by_phase: dict[str, list[Shot]] = defaultdict(list)
    for shot in shots:
        by_phase[shot.phase].append(shot)
    import numpy as np

    def summary(group: list[Shot]) -> dict[str, Any]:
        ok = np.array([s.latency_s for s in group if s.status == 200]) * 1000
        out: dict[str, Any] = {"requests": len(group), "statuses": dict(Counter(s.status for s in group))}
        if len(ok):
            out |= {
                "p50_ms": round(float(np.percentile(ok, 50)), 1),
                "p99_ms": round(float(np.percentile(ok, 99)), 1),
            }
            out["degraded_share"] = round(sum(s.degraded for s in group if s.status == 200) / len(ok), 3)
        return out

    answered = [s for s in shots if s.status == 200]
    report = {
        "seconds": args.seconds,
        "fault_every_s": args.fault_every,
        "concurrency": args.concurrency,
        "tables_per_game": args.tables,
        "requests": len(shots),
        "statuses": dict(sorted(statuses.items())),
        "status_500": statuses.get(500, 0),
        "transport_errors": statuses.get(0, 0),
        "undocumented_statuses": {k: v for k, v in statuses.items() if k not in DOCUMENTED},
        "revoked_key_401": sum(1 for s in shots if s.status == 401 and s.key == VICTIM_KEY),
        "main_key_not_200": sum(1 for s in shots if s.key == MAIN_KEY and s.status != 200),
        "degraded_share": round(sum(s.degraded for s in answered) / max(1, len(answered)), 3),
        "phases": {name: summary(group) for name, group in by_phase.items()},
        "faults": fault_log,
        "feedback": {
            "sent": sum(feedback_status.values()),
            "statuses": dict(feedback_status),
            "accepted": len(feedback),
            "rows_in_lake": len(rows),
            "lost": sum(1 for rid in feedback if rid not in in_lake),
            "duplicated": sum(n - 1 for n in in_lake.values() if n > 1),
            "not_accepted_but_stored": sum(1 for rid in in_lake if rid not in feedback),
            "mis_attributed": sum(
                1 for r in rows if r["request_id"] in feedback and feedback[r["request_id"]] != r["business"]
            ),
        },
        "server_exit_code": exit_code,
        "load_average": {"before_setup": load_before, "load_start": load_start, "load_end": load_end},
        "wall_s": round(time.time() - started, 1),
        "workdir": str(root),
    }
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
