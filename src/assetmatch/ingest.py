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
   a. quarantine rows (always, even when a guard failed: nothing is lost; they carry the run id),
   b. query_log / requirements / glossary upserts (idempotent: a re-run rewrites nothing),
   c. the asset merge as the last step, one Delta commit (or none when nothing changed).
   A crash anywhere before (c) leaves `assets` at its previous version; re-running the same
   ingest completes it, because every step is idempotent.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
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
    quarantined: int = 0

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
def _extract(spec: SourceSpec, on_record: OnRecord | None) -> tuple[dict[str, list[Any]], SourceReport]:
    source = registry.create(spec)
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
            for record in iterate():
                batch.append(normalize(record, spec.name))
                if on_record is not None:
                    on_record(spec.name, table)
    finally:
        source.close()
    return batches, source.report


def _guard_failures(
    settings: Settings, spec: SourceSpec, lake: Lake, validations: dict[str, BatchValidation[Any]]
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
) -> SourceSummary:
    """Extract, normalize, validate and write one source. See the module docstring for the order.

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
    batches, report = _extract(spec, on_record)
    summary.report = report.as_dict()
    for table, batch in batches.items():
        summary.tables[table].extracted = len(batch)
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
    lake.append(T.QUARANTINE, refused, run_id)
    problems = _guard_failures(settings, spec, lake, validations)
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
    if assets.good or spec.mode == "full":
        merged = lake.merge_assets(
            assets.good,
            run_id,
            snapshot_of=spec.name if spec.mode == "full" else None,
            now=now,
            keep_ids=[b.key for b in assets.bad if b.key],
        )
        counts = summary.tables[T.ASSETS]
        counts.inserted, counts.updated, counts.unchanged = merged.inserted, merged.updated, merged.unchanged
        counts.soft_deleted, counts.restored = merged.soft_deleted, merged.restored
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
) -> IngestSummary:
    """Ingest the configured sources (or the named ones) one after the other.

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
            return ingest_source(settings, spec, summary.run_id, lake, on_record)
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
