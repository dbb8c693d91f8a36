"""Versioned index folders under an index root, published atomically.

Layout::

    <index_root>/
        CURRENT                  # one line: the id of the published index
        <id>/manifest.json ...   # one complete index per id (the last few are kept)
        .building-<id>/          # an index being written; never read, removed if the build fails

A build writes everything into `.building-<id>/`, fsyncs the files, renames the folder to `<id>/`
(atomic on one filesystem), then replaces `CURRENT` with `os.replace` (atomic too). A reader that
resolves `CURRENT` therefore sees either the old complete index or the new complete one, never a
half-written one; a reader that already loaded the old index holds it in memory and is unaffected.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
BUILDING_PREFIX = ".building-"


def new_index_id(now: datetime | None = None) -> str:
    """Sortable, unique id: UTC timestamp plus a short random suffix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    # directories can be fsynced on POSIX; elsewhere this is best effort
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def staging(root: Path, index_id: str) -> Iterator[Path]:
    """A private folder to write an index into; removed if the block raises (nothing is published)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{BUILDING_PREFIX}{index_id}"
    folder.mkdir()
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def publish(root: Path, staged: Path, index_id: str, keep: int = 3) -> Path:
    """Make the staged folder the current index, atomically; then drop all but the `keep` newest."""
    if not (staged / MANIFEST).exists():
        raise ValueError(f"{staged} has no {MANIFEST}: refusing to publish an incomplete index")
    _fsync_tree(staged)
    final = root / index_id
    os.rename(staged, final)
    _fsync_dir(root)
    point_current(root, index_id)
    prune(root, keep=keep)
    return final


def point_current(root: Path, index_id: str) -> None:
    """Make the published folder `index_id` the current index, atomically and durably (a rollback
    to an earlier folder is the same move)."""
    if not (root / index_id / MANIFEST).exists():
        raise FileNotFoundError(f"{root / index_id} is not a published index")
    pointer = root / f".{CURRENT}.{index_id}.tmp"
    pointer.write_text(index_id + "\n", encoding="utf-8")
    with open(pointer, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(pointer, root / CURRENT)
    _fsync_dir(root)


def current_id(root: Path) -> str | None:
    pointer = root / CURRENT
    if not pointer.exists():
        return None
    value = pointer.read_text(encoding="utf-8").strip()
    return value or None


def published_ids(root: Path) -> list[str]:
    """Ids of complete index folders, oldest first."""
    if not root.exists():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists()
    )


def prune(root: Path, keep: int = 3) -> list[str]:
    """Remove published folders beyond the `keep` newest (never the current one). Returns removed ids."""
    keep = max(1, keep)
    current = current_id(root)
    ids = published_ids(root)
    removed = []
    for index_id in ids[: max(0, len(ids) - keep)]:
        if index_id != current:
            shutil.rmtree(root / index_id, ignore_errors=True)
            removed.append(index_id)
    return removed
