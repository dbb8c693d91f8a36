"""The ingest pipeline: extract -> normalize -> validate -> write, per configured source.

`run_ingest` is the one entry point the CLI, the Prefect flow, the demo and the tests call;
`ingest_source` does one source (the flow runs those in parallel).

Per source:
1. **extract**: `registry.create(spec)` and drain every record kind (assets, query log,
   requirements, glossary) into memory. A source that raises half-way has written nothing.
2. **normalize**: `assetmatch.text.normalize_text` on every text field and id (whitespace, control
   characters, full-width forms), before the content hash, so cosmetic variants hash equal.
3. **validate**: each batch against its GX suite (`assetmatch.quality`); refused rows get reasons.
4. **guards**: a batch whose refused share exceeds `validation.max_bad_fraction`, or a
   full-snapshot source that now misses more than `validation.max_shrink_fraction` of its live
   tables (a wrong schema filter, an expired grant), fails the source: nothing merges.
5. **write**, in this order:
   a. quarantine rows (always, even when a guard failed: nothing is lost; they carry the run id).
      A refused row already in `quarantine` for this source (same table, key, reason and
      payload) is not stored again: an unchanged re-ingest adds no quarantine version,
   b. query_log / requirements / glossary upserts (idempotent: a re-run rewrites nothing),
   c. the asset merge as the last step, one Delta commit (or none when nothing changed).
   d. the catalog fingerprints of the tables read (`source_state`), for change detection.
   A crash anywhere before (c) leaves `assets` at its previous version; re-running the same
   ingest completes it, because every step is idempotent.

Change detection (`assetmatch.sources.changes`): before extracting, a source that supports it
(PostgreSQL and MySQL/MariaDB `sql` sources) is handed the fingerprints of its last run, each
valid only while `assets` still holds, live, the content hash it was stored with. The source reads
columns for new or changed tables only; the unchanged ones it lists are kept as they are (counted
`unchanged` and `not_read`), never soft-deleted. A lost or stale state means a full read.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from assetmatch.config import Settings, SourceSpec
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import GlossaryTerm, QueryLogEntry, Requirement, TableAsset
from assetmatch.quality import BatchValidation, quarantine_rows, validate_batch
from assetmatch.sources import registry
from assetmatch.sources.base import SourceReport
from assetmatch.sources.changes import ChangeState, DetectsChanges, KnownAsset
from assetmatch.text import normalize_text

log = logging.getLogger(__name__)

INGESTED_TABLES = (T.ASSETS, T.QUERY_LOG, T.REQUIREMENTS, T.GLOSSARY)
TRACKED_TABLES = (*INGESTED_TABLES, T.QUARANTINE)

OnRecord = Callable[[str, str], None]
"""Progress callback: (source name, event) where event is a table name or a phase name."""


class IngestError(RuntimeError):
    """A source's run failed for a reason the pipeline detected (a guard); carries its summary."""

    def __init__(self, message: str, summary: SourceSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:  # keep the summary when a task runner pickles the error
        return (type(self), (str(self), self.summary))


@dataclass
class TableCounts:
    """What happened to one lake table's rows for one source."""

    extracted: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    soft_deleted: int = 0
    restored: int = 0
    quarantined: int = 0  # refused rows (by validation, or skipped by the source), all in `quarantine`
    skipped: int = 0  # records the source could not read (part of `quarantined`)
    not_read: int = 0  # tables the source saw unchanged and did not read (part of `unchanged`)

    def add(self, other: TableCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class SourceSummary:
    """The outcome of ingesting one source."""

    source: str
    type: str
    run_id: str
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    tables: dict[str, TableCounts] = field(
        default_factory=lambda: {t: TableCounts() for t in INGESTED_TABLES}
    )
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions_before: dict[str, int | None] = field(default_factory=dict)
    versions_after: dict[str, int | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    # refused rows newly stored in `quarantine` (those already stored for this source are not repeated)
    quarantine_stored: int = 0
    # how the assets were read: "full", or "changed" (change detection: only new or changed tables)
    read_mode: str = "full"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestSummary:
    """The outcome of one ingest run over several sources."""

    run_id: str
    sources: list[SourceSummary] = field(default_factory=list)
    versions_before: dict[str, int | None] = field(default_factory=dict)
    versions_after: dict[str, int | None] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sources)

    @property
    def failed(self) -> list[SourceSummary]:
        return [s for s in self.sources if not s.ok]

    def totals(self) -> dict[str, TableCounts]:
        out = {t: TableCounts() for t in INGESTED_TABLES}
        for summary in self.sources:
            for table, counts in summary.tables.items():
                out[table].add(counts)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "totals": {t: asdict(c) for t, c in self.totals().items()}}


def new_run_id() -> str:
    """Sortable, unique: UTC time plus a random suffix, e.g. 20260101T120000Z-1a2b3c4d."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


# ---- normalization ---------------------------------------------------------------------------
def _ids(values: Sequence[str]) -> list[str]:
    return [normalize_text(v) for v in values]


def normalize_asset(asset: TableAsset, source: str) -> TableAsset:
    """`TableAsset.normalized()`, stamped with the source that reported it."""
    normalized = asset.normalized()
    normalized.source = source
    return normalized


def normalize_query(entry: QueryLogEntry, source: str) -> QueryLogEntry:
    """The SQL text is kept as written (string literals and layout are significant); the rest is normalized."""
    return entry.model_copy(
        update={
            "business": normalize_text(entry.business),
            "user": normalize_text(entry.user),
            "requirement": normalize_text(entry.requirement) if entry.requirement is not None else None,
            "tables": _ids(entry.tables),
            "source": source,
        }
    )


def normalize_requirement(req: Requirement, source: str) -> Requirement:
    return req.model_copy(
        update={
            "id": normalize_text(req.id),
            "business": normalize_text(req.business),
            "text": normalize_text(req.text),
            "gold_assets": _ids(req.gold_assets),
            "source": source,
        }
    )


def normalize_term(term: GlossaryTerm, source: str) -> GlossaryTerm:
    return term.model_copy(
        update={
            "business": normalize_text(term.business),
            "term": normalize_text(term.term),
            "synonyms": [s for s in _ids(term.synonyms) if s],
            "description": normalize_text(term.description),
            "assets": _ids(term.assets),
            "source": source,
        }
    )


# ---- rows --------------------------------------------------------------------------------------
def _record_row(record: BaseModel, run_id: str) -> dict[str, Any]:
    return {**record.model_dump(), "run_id": run_id}


# ---- the pipeline ------------------------------------------------------------------------------
class _CyclicGcPause:
    """Pauses Python's cyclic garbage collector while at least one catalog read runs (sources may
    run in threads: the last one out restores it, and only if it was on).

    A full collection walks every object of the process (Great Expectations, the models: about a
    gigabyte), 0.2 s each time, and the many short-lived rows of a catalog read trigger some at
    random: a few tenths of a second on a re-ingest that otherwise takes one. What a catalog read
    allocates is acyclic (rows, records), freed by reference counting; cycles, if any, wait for the
    next collection after it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _CyclicGcPause()


def _extract(
    spec: SourceSpec, on_record: OnRecord | None, known: Callable[[], dict[str, KnownAsset]] | None = None
) -> tuple[dict[str, list[Any]], SourceReport, ChangeState | None]:
    """Drain the source. A source that detects changes gets a `ChangeState`: with `known()`, the
    lake's state (it then reads only new or changed tables); without (a full read), an empty one,
    so it still reports the fingerprints to store."""
    source = registry.create(spec)
    changes: ChangeState | None = None
    if isinstance(source, DetectsChanges):
        with _gc_paused():
            changes = source.changes = ChangeState(known=known() if known is not None else {})
    batches: dict[str, list[Any]] = {t: [] for t in INGESTED_TABLES}
    kinds: list[tuple[str, Callable[[], Any], Callable[[Any, str], Any]]] = [
        (T.ASSETS, source.iter_assets, normalize_asset),
        (T.QUERY_LOG, source.iter_query_log, normalize_query),
        (T.REQUIREMENTS, source.iter_requirements, normalize_requirement),
        (T.GLOSSARY, source.iter_glossary, normalize_term),
    ]
    try:
        for table, iterate, normalize in kinds:
            batch = batches[table]
            # catalog reads only: query-log parsing (sqlglot trees) makes cycles worth collecting
            with _gc_paused() if table == T.ASSETS else nullcontext():
                for record in iterate():
                    batch.append(normalize(record, spec.name))
                    if on_record is not None:
                        on_record(spec.name, table)
    finally:
        source.close()
    return batches, source.report, changes


def known_assets(lake: Lake, source: str) -> dict[str, KnownAsset]:
    """The fingerprints `source` stored at its last ingest, for the assets `assets` still holds as
    they were then (live, same content hash, reported by that source). Anything else is left out,
    so the source reads it again: a lost, stale or foreign state costs a read, never a wrong row."""
    state = lake.read_arrow(T.SOURCE_STATE, filters=[("source", "=", source)])
    if not state.num_rows:
        return {}
    assets = lake.read_arrow(
        T.ASSETS,
        columns=["asset_id", "content_hash", "deleted", "row_count"],
        filters=[("source", "=", source)],
    ).to_pydict()
    live = {
        a: (h, n)
        for a, h, d, n in zip(
            assets["asset_id"], assets["content_hash"], assets["deleted"], assets["row_count"]
        )
        if not d
    }
    out: dict[str, KnownAsset] = {}
    rows = state.to_pydict()
    for asset_id, fingerprint, content_hash in zip(
        rows["asset_id"], rows["fingerprint"], rows["content_hash"]
    ):
        current = live.get(asset_id)
        if current is not None and current[0] == content_hash and fingerprint:
            out[asset_id] = KnownAsset(fingerprint=fingerprint, row_count=current[1])
    return out


def quarantine_key(row: dict[str, Any]) -> str:
    """Stable key of a quarantine row: the same refused record from the same source, for the same
    reason, has the same key whatever the run."""
    parts = (row["source"], row["target_table"], row["record_key"], row["reason"], row["payload"])
    blob = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def new_quarantine_rows(lake: Lake, source: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows not yet in `quarantine` for this source (and each once)."""
    if not rows:
        return []
    stored = lake.read_arrow(
        T.QUARANTINE,
        columns=["source", "target_table", "record_key", "reason", "payload"],
        filters=[("source", "=", source)],
    )
    seen = {quarantine_key(r) for r in stored.to_pylist()}
    fresh = []
    for row in rows:
        key = quarantine_key(row)
        if key not in seen:
            seen.add(key)
            fresh.append(row)
    return fresh


def _guard_failures(
    settings: Settings,
    spec: SourceSpec,
    lake: Lake,
    validations: dict[str, BatchValidation[Any]],
    changes: ChangeState | None = None,
) -> list[str]:
    """Reasons to refuse the whole batch (empty when it may merge)."""
    problems: list[str] = []
    limit = settings.validation.max_bad_fraction
    for table, v in validations.items():
        if v.total and v.bad_fraction > limit:
            top = ", ".join(
                f"{r} ({n})" for r, n in sorted(v.summary()["reasons"].items(), key=lambda x: -x[1])[:3]
            )
            problems.append(
                f"{table}: {len(v.bad)} of {v.total} rows failed validation "
                f"({v.bad_fraction:.0%} > max_bad_fraction {limit:.0%}): {top}"
            )
    if spec.mode == "full":
        live = lake.live_asset_ids(spec.name)
        assets = validations[T.ASSETS]
        reported = {a.asset_id for a in assets.good} | {b.key for b in assets.bad}
        if changes is not None:
            # kept: seen unchanged; replaced: the same table under an id from an earlier scheme
            reported |= set(changes.kept) | {old for old, new in changes.replaced.items() if new in reported}
        missing = live - reported
        shrink_limit = settings.validation.max_shrink_fraction
        if live and len(missing) / len(live) > shrink_limit:
            problems.append(
                f"assets: the source now reports {len(live) - len(missing)} of the {len(live)} tables it had "
                f"({len(missing) / len(live):.0%} gone > max_shrink_fraction {shrink_limit:.0%}); check its "
                "schema filters and grants, or raise validation.max_shrink_fraction if the drop is real"
            )
    return problems


def ingest_source(
    settings: Settings,
    spec: SourceSpec,
    run_id: str,
    lake: Lake | None = None,
    on_record: OnRecord | None = None,
    full_read: bool = False,
) -> SourceSummary:
    """Extract, normalize, validate and write one source. See the module docstring for the order.

    full_read: ignore the stored fingerprints and read every table (change detection off).

    Raises IngestError (with the summary attached) when a guard refuses the batch; any other
    exception (a connection error, a crashing plugin) propagates unchanged so callers can retry.
    """
    lake = lake or Lake.from_settings(settings)
    started = time.perf_counter()
    summary = SourceSummary(source=spec.name, type=spec.type, run_id=run_id)
    summary.versions_before = {t: lake.version(t) for t in TRACKED_TABLES}

    # 1-2. extract + normalize
    # cpu_timings: this process's CPU seconds per phase (all threads; with sources in parallel they
    # overlap). Wall time well above CPU time means waiting: on the source database, or for a CPU.
    t0, c0 = time.perf_counter(), time.process_time()
    batches, report, changes = _extract(
        spec, on_record, None if full_read else (lambda: known_assets(lake, spec.name))
    )
    summary.report = report.as_dict()
    for table, batch in batches.items():
        summary.tables[table].extracted = len(batch)
        summary.tables[table].skipped = len(report.rejected_for(table))
    if changes is not None and changes.known:
        summary.read_mode = "changed"
    kept = changes.kept if changes is not None else []
    summary.timings["extract"] = time.perf_counter() - t0
    summary.cpu_timings["extract"] = time.process_time() - c0

    # 3. validate
    t0, c0 = time.perf_counter(), time.process_time()
    if on_record is not None:
        on_record(spec.name, "validate")
    # records the source refused (unreadable lines, wrong shapes) are quarantined with the refused rows
    validations = {
        table: validate_batch(table, batch, settings, rejected=report.rejected_for(table))
        for table, batch in batches.items()
    }
    for table, v in validations.items():
        summary.tables[table].quarantined = len(v.bad)
        if v.total:
            summary.validation[table] = v.summary()
    summary.timings["validate"] = time.perf_counter() - t0
    summary.cpu_timings["validate"] = time.process_time() - c0

    # 4-5. guards, then writes (quarantine first: refused rows are kept even when the batch fails)
    t0, c0 = time.perf_counter(), time.process_time()
    if on_record is not None:
        on_record(spec.name, "merge")
    now = datetime.now(UTC)
    refused = [
        row for t, v in validations.items() for row in quarantine_rows(v.bad, t, spec.name, run_id, now)
    ]
    fresh = new_quarantine_rows(lake, spec.name, refused)
    lake.append(T.QUARANTINE, fresh, run_id)
    summary.quarantine_stored = len(fresh)
    problems = _guard_failures(settings, spec, lake, validations, changes)
    if problems:
        summary.status = "failed"
        summary.error = "; ".join(problems)
        summary.timings["merge"] = time.perf_counter() - t0
        summary.versions_after = {t: lake.version(t) for t in TRACKED_TABLES}
        summary.duration_s = time.perf_counter() - started
        raise IngestError(f"source {spec.name!r}: {summary.error}", summary)

    for table in (T.QUERY_LOG, T.REQUIREMENTS, T.GLOSSARY):
        good = validations[table].good
        if good:
            upserted = lake.upsert_rows(table, [_record_row(r, run_id) for r in good], run_id)
            counts = summary.tables[table]
            counts.inserted, counts.updated, counts.unchanged = (
                upserted.inserted,
                upserted.updated,
                upserted.unchanged,
            )

    assets = validations[T.ASSETS]
    counts = summary.tables[T.ASSETS]
    if assets.good or spec.mode == "full":
        merged = lake.merge_assets(
            assets.good,
            run_id,
            snapshot_of=spec.name if spec.mode == "full" else None,
            now=now,
            keep_ids=[b.key for b in assets.bad if b.key] + kept,
        )
        counts.inserted, counts.updated, counts.unchanged = merged.inserted, merged.updated, merged.unchanged
        counts.soft_deleted, counts.restored = merged.soft_deleted, merged.restored
        if changes is not None and changes.fingerprints:
            # after the merge: a state without its merge is never written (and would not count anyway)
            state = [
                {
                    "source": spec.name,
                    "asset_id": a.asset_id,
                    "fingerprint": changes.fingerprints[a.asset_id],
                    "content_hash": merged.content_hashes[a.asset_id],
                    "run_id": run_id,
                }
                for a in assets.good
                if a.asset_id in changes.fingerprints and a.asset_id in merged.content_hashes
            ]
            if state:
                lake.upsert_rows(T.SOURCE_STATE, state, run_id)
    counts.unchanged += len(kept)
    counts.not_read = len(kept)
    summary.timings["merge"] = time.perf_counter() - t0
    summary.cpu_timings["merge"] = time.process_time() - c0
    summary.versions_after = {t: lake.version(t) for t in TRACKED_TABLES}
    summary.duration_s = time.perf_counter() - started
    return summary


def failed_summary(
    spec: SourceSpec, run_id: str, exc: BaseException, duration_s: float = 0.0
) -> SourceSummary:
    """The summary of a source that raised: its guard summary if it has one, else the error."""
    if isinstance(exc, IngestError) and exc.summary is not None:
        return exc.summary
    return SourceSummary(
        source=spec.name,
        type=spec.type,
        run_id=run_id,
        status="failed",
        error=f"{type(exc).__name__}: {exc}",
        duration_s=duration_s,
    )


def select_sources(settings: Settings, names: Sequence[str] | None = None) -> list[SourceSpec]:
    """The enabled sources, or exactly the named ones (an unknown name is a ConfigError)."""
    if names:
        return [settings.source(n) for n in names]
    return [s for s in settings.sources if s.enabled]


def run_ingest(
    settings: Settings,
    sources: Sequence[str] | None = None,
    run_id: str | None = None,
    lake: Lake | None = None,
    progress: bool = False,
    full_read: bool = False,
) -> IngestSummary:
    """Ingest the configured sources (or the named ones) one after the other.

    full_read=True reads every table of every source (change detection off for this run).

    A failing source does not stop the others; its summary says why (`summary.failed`).
    progress=True shows a rich progress display with a live record count per source.
    """
    specs = select_sources(settings, sources)
    lake = lake or Lake.from_settings(settings)
    summary = IngestSummary(run_id=run_id or new_run_id())
    summary.versions_before = {t: lake.version(t) for t in TRACKED_TABLES}
    started = time.perf_counter()

    def run_one(spec: SourceSpec, on_record: OnRecord | None) -> SourceSummary:
        t0 = time.perf_counter()
        try:
            return ingest_source(settings, spec, summary.run_id, lake, on_record, full_read=full_read)
        except Exception as exc:  # one source's failure is reported, the others still run
            if not isinstance(exc, IngestError):
                log.exception("source %s failed", spec.name)
            return failed_summary(spec, summary.run_id, exc, time.perf_counter() - t0)

    if progress:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=False
        ) as bar:
            for spec in specs:
                task = bar.add_task(f"{spec.name}: extract", total=None)
                seen = {"records": 0}

                def on_record(name: str, event: str, task: Any = task, seen: dict[str, int] = seen) -> None:
                    if event in INGESTED_TABLES:
                        seen["records"] += 1
                        if seen["records"] % 200 == 1:
                            bar.update(task, description=f"{name}: extract ({seen['records']} records)")
                    else:
                        bar.update(task, description=f"{name}: {event} ({seen['records']} records)")

                result = run_one(spec, on_record)
                mark = "[green]ok[/green]" if result.ok else "[red]failed[/red]"
                bar.update(
                    task, description=f"{spec.name}: {mark} ({seen['records']} records)", total=1, completed=1
                )
                summary.sources.append(result)
    else:
        summary.sources.extend(run_one(spec, None) for spec in specs)

    summary.versions_after = {t: lake.version(t) for t in TRACKED_TABLES}
    summary.duration_s = time.perf_counter() - started
    return summary
