"""Faults a serving deployment must survive, injected for real and undone: the chaos benchmark
(`benchmarks/serve_chaos.py`) and its integration test use the same injectors.

Each injector changes the deployment the way an operator's mistake or an outage would and
returns a `Fault` whose `undo()` puts it back:

- `publish_inconsistent_index`: a copy of the current index with its assets list cut in half,
  published as the new current index (its files load, but disagree with each other);
- `move_alias_to_corrupt_version`: a new registered version of a business's adapter whose weights
  or `calibration.json` are garbage, with the champion (or another) alias moved onto it;
- `PrivateRedis`: a `redis-server` of its own on a free port, stopped and started again;
- `make_lake_table_unwritable`: a lake table's folder replaced by a plain file (as root, file
  permissions would not stop a write; a file where the folder should be does), then restored;
- `revoke_key`: a key removed from the keys file the server re-reads (`serving.api_keys_file`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from assetmatch.config import Settings
from assetmatch.recall import publish
from assetmatch.recall.index import ASSET_ROWS_FILE, ASSETS_FILE, business_ranges, write_asset_rows


@dataclass
class Fault:
    """One injected fault; `undo()` reverts it (idempotent)."""

    name: str
    detail: str
    _undo: Callable[[], None] = field(repr=False)
    undone: bool = False

    def undo(self) -> None:
        if not self.undone:
            self._undo()
            self.undone = True


def publish_inconsistent_index(index_root: str | Path, keep_share: float = 0.5) -> Fault:
    """Publish a copy of the current index whose assets list keeps only `keep_share` of its rows
    (the BM25, FAISS and graph files and the manifest still describe all of them)."""
    root = Path(index_root)
    previous = publish.current_id(root)
    if previous is None:
        raise FileNotFoundError(f"no index is published under {root}")
    broken_id = publish.new_index_id()
    with publish.staging(root, broken_id) as staged:
        shutil.copytree(root / previous, staged, dirs_exist_ok=True)
        assets = staged / ASSETS_FILE
        lines = assets.read_bytes().splitlines(keepends=True)
        kept = max(1, int(len(lines) * keep_share))
        assets.write_bytes(b"".join(lines[:kept]))
        _cut_rows(staged / ASSET_ROWS_FILE, lines[:kept])
        manifest_path = staged / publish.MANIFEST
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["id"] = manifest["version"] = broken_id
        manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        publish.publish(root, staged, broken_id, keep=1_000)  # prune nothing: the old one comes back

    def undo() -> None:
        publish.point_current(root, previous)
        shutil.rmtree(root / broken_id, ignore_errors=True)

    return Fault(
        "inconsistent-index",
        f"index {broken_id}: {kept} of {len(lines)} assets listed (was {previous})",
        undo,
    )


def _cut_rows(path: Path, lines: list[bytes]) -> None:
    """Rewrite an index's row file for the first `lines` of its tables file, so the list is cut
    consistently and only the other files disagree with it."""
    tables = [json.loads(line) for line in lines]
    ranges = business_ranges([t["business"] for t in tables])
    ends = list(accumulate(len(line) for line in lines))
    spans = {b: ((ends[start - 1] if start else 0), ends[end - 1]) for b, (start, end) in ranges.items()}
    write_asset_rows(path, [t["asset_id"] for t in tables], ranges, spans)


def move_alias_to_corrupt_version(
    settings: Settings, business: str, alias: str = "champion", kind: str = "calibration"
) -> Fault:
    """Register a corrupt copy of the version `alias` names and move `alias` onto it.

    kind "calibration": the adapter loads, its `calibration.json` is not JSON; kind "weights": the
    weights file is garbage (the load itself fails)."""
    from assetmatch.registry.mlflow import Registry
    from assetmatch.serving.synthetic import register_adapter

    if kind not in ("calibration", "weights"):
        raise ValueError(f"kind must be 'calibration' or 'weights', not {kind!r}")
    registry = Registry.from_settings(settings)
    before = registry.version_by_alias(business, alias)
    if before is None:
        raise LookupError(f"business {business!r} has no {alias!r} version to corrupt")
    folder = Path(settings.training.adapters_dir) / "corrupt" / business / uuid.uuid4().hex[:8]
    registry.download_adapter(business, str(before.version), folder)
    if kind == "weights":
        for weights in folder.glob("adapter_model.*"):
            weights.write_bytes(b"not a tensor file")
    else:
        (folder / "calibration.json").write_text('{"cascade": [not json', encoding="utf-8")
    corrupt = register_adapter(registry, business, folder, alias=alias)

    def undo() -> None:
        registry.set_alias(business, alias, str(before.version))

    return Fault(
        "corrupt-adapter",
        f"{business}@{alias} moved from version {before.version} to corrupt version {corrupt} ({kind})",
        undo,
    )


class PrivateRedis:
    """A `redis-server` of its own on `port` (no persistence), for tests that stop and start Redis
    without touching the machine's shared one."""

    def __init__(self, port: int, log: Path | None = None, executable: str = "redis-server") -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log = log
        self.executable = shutil.which(executable) or executable
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if self.log:
            out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server on port {self.port} did not answer in {timeout_s}s")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def outage(self) -> Fault:
        """Stop it now; `undo()` starts it again on the same port."""
        self.stop()
        return Fault("redis-down", f"redis-server on port {self.port} stopped", self.start)


def make_lake_table_unwritable(lake_uri: str, table: str) -> Fault:
    """Put a plain file where the local lake's `table` folder is (its folder is set aside and put
    back by `undo()`, with whatever was committed to it before)."""
    if "://" in lake_uri and not lake_uri.startswith("file://"):
        raise ValueError(f"only a local lake can be made unwritable here, not {lake_uri}")
    path = Path(lake_uri.removeprefix("file://")) / table
    held = path.with_name(f".{table}.held-{uuid.uuid4().hex[:8]}")
    existed = path.exists()
    if existed:
        os.rename(path, held)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("unwritable: a fault was injected here\n", encoding="utf-8")

    def undo() -> None:
        path.unlink(missing_ok=True)
        if existed:
            os.rename(held, path)

    return Fault("lake-unwritable", f"{path} replaced by a file", undo)


def revoke_key(keys_file: str | Path, digest: str) -> Fault:
    """Remove the key `digest` from a YAML keys file (`serving.api_keys_file`), atomically; `undo()`
    puts its entry back. The server drops it at its next key re-read (`serving.reload_interval_s`)."""
    import yaml

    path = Path(keys_file)

    def read() -> dict[str, list[str]]:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a mapping of key digests")
        return data

    def write(data: dict[str, list[str]]) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    keys = read()
    if digest not in keys:
        raise KeyError(f"{digest[:12]}... is not in {path}")
    entry = keys.pop(digest)
    write(keys)

    def undo() -> None:
        write({**read(), digest: entry})

    return Fault("key-revoked", f"key {digest[:12]}... removed from {path.name}", undo)
