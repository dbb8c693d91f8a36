"""Change detection at the source: read only the tables whose catalog entry changed.

A source that can fingerprint its tables cheaply (one catalog query computing, per table, a hash
of its columns, types, comments and keys) exposes a `changes` attribute (`DetectsChanges`). Before
reading, the ingest pipeline sets it to a `ChangeState` holding what the lake knows of the
source's previous run: per asset id, the fingerprint it had and its row-count estimate. The
source then reads columns only for new or changed tables, and lists the unchanged ones in
`kept`; the pipeline keeps their lake rows as they are (no soft delete, no rewrite).

The state lives in the lake (`source_state`, bound to the content hash of each asset row), so a
lost or stale state only means a full read, never a wrong lake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class KnownAsset:
    """What the lake holds of one asset the source reported last time."""

    fingerprint: str
    row_count: int | None


@dataclass
class ChangeState:
    """In: `known` (from the lake). Out: what this read saw."""

    known: dict[str, KnownAsset] = field(default_factory=dict)
    # asset_id -> catalog fingerprint of every table the source read this time (not the kept ones)
    fingerprints: dict[str, str] = field(default_factory=dict)
    # ids of tables whose fingerprint and row-count magnitude equal the known ones: not read
    kept: list[str] = field(default_factory=list)
    # id the lake may still hold from an earlier id scheme -> the id reported now
    replaced: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class DetectsChanges(Protocol):
    """A source that reads only new or changed tables when its `changes` is set (None: full read)."""

    changes: ChangeState | None


def row_magnitude(row_count: int | None) -> int | None:
    """The order of magnitude the content hash keeps of a row-count estimate (`hash_asset_dump`):
    a table whose estimate moves to another magnitude is re-read, drift within one is not."""
    return None if row_count is None else len(str(max(int(row_count), 0)))
