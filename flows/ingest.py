"""Prefect flow `ingest-metadata`: every configured source extracted, validated and merged in parallel.

Thin wiring over `assetmatch.ingest`: one task per source (`ingest_source`: extract -> validate ->
merge), submitted together; the lake serializes the commits. A task is retried, with a growing
delay, only when it failed on a connection error; a validation guard (a mostly-bad batch, a
shrunken snapshot) or a broken plugin fails at once. Counts and the validation summary are
published as Prefect artifacts (`ingest-counts`, `ingest-validation`); the flow fails when a
source failed, after publishing them.

Runs without a Prefect server (a temporary local API starts) or against one
(`PREFECT_API_URL`). `python flows/ingest.py` serves it on an hourly schedule.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import Task

from assetmatch.config import load_settings
from assetmatch.ingest import (
    TRACKED_TABLES,
    IngestError,
    IngestSummary,
    SourceSummary,
    failed_summary,
    ingest_source,
    new_run_id,
    select_sources,
)
from assetmatch.lake.delta import Lake

COUNT_FIELDS = ("extracted", "inserted", "updated", "unchanged", "soft_deleted", "restored", "quarantined")


def is_connection_error(exc: BaseException | None) -> bool:
    """Transient failures worth a retry: the network, a database that is restarting."""
    import sqlalchemy.exc as sa_exc

    while exc is not None:
        if isinstance(exc, ConnectionError | TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if type(exc).__name__ == "SourceConnectionError":  # the sql source's own, after its retries
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_on_connection_error(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result()
    except Exception as exc:
        return is_connection_error(exc)
    return False


@task(
    name="ingest-source",
    task_run_name="ingest-{source}",
    retries=3,
    retry_delay_seconds=[10, 30, 90],
    retry_condition_fn=retry_on_connection_error,
)
def ingest_source_task(config_path: str | None, source: str, run_id: str) -> SourceSummary:
    """Extract, validate and merge one source (see `assetmatch.ingest.ingest_source`)."""
    settings = load_settings(config_path)
    return ingest_source(settings, settings.source(source), run_id)


def publish_artifacts(summary: IngestSummary) -> None:
    """Counts per source and table as a table artifact, the validation outcome as markdown."""
    rows = [
        {"source": s.source, "table": t, "status": s.status, **{f: getattr(c, f) for f in COUNT_FIELDS}}
        for s in summary.sources
        for t, c in s.tables.items()
        if c.extracted or c.soft_deleted or t == "assets"
    ]
    create_table_artifact(
        table=rows, key="ingest-counts", description=f"ingest run {summary.run_id}: rows per table"
    )
    lines = [f"# Ingest run `{summary.run_id}`", ""]
    for s in summary.sources:
        lines.append(f"## {s.source} ({s.type}): {'ok' if s.ok else 'FAILED'}")
        if s.error:
            lines.append(f"**Error:** {s.error}")
        for table, v in s.validation.items():
            reasons = ", ".join(f"{r}: {n}" for r, n in v["reasons"].items()) or "none"
            lines.append(
                f"- `{table}`: {v['good']} good, {v['bad']} quarantined ({v['bad_fraction']:.1%}); {reasons}"
            )
        lines.append("")
    versions = ", ".join(
        f"{t} {summary.versions_before.get(t)} → {v}" for t, v in summary.versions_after.items()
    )
    lines.append(f"Lake versions: {versions}")
    create_markdown_artifact(
        markdown="\n".join(lines), key="ingest-validation", description="validation summary"
    )


@flow(name="ingest-metadata", log_prints=False)
def ingest(
    config_path: str | None = None, sources: list[str] | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Ingest the configured sources (or the named ones) into the lake, one parallel task each."""
    log = get_run_logger()
    settings = load_settings(config_path)
    lake = Lake.from_settings(settings)
    summary = IngestSummary(run_id=run_id or new_run_id())
    summary.versions_before = {t: lake.version(t) for t in TRACKED_TABLES}
    started = time.perf_counter()
    specs = select_sources(settings, sources)
    futures = [(spec, ingest_source_task.submit(config_path, spec.name, summary.run_id)) for spec in specs]
    for spec, future in futures:
        try:
            summary.sources.append(future.result())
        except Exception as exc:  # reported per source; the flow fails below, after the artifacts
            summary.sources.append(failed_summary(spec, summary.run_id, exc))
    summary.versions_after = {t: lake.version(t) for t in TRACKED_TABLES}
    summary.duration_s = time.perf_counter() - started
    publish_artifacts(summary)
    for s in summary.sources:
        log.info(
            "%s: %s %s", s.source, s.status, {t: c.extracted for t, c in s.tables.items() if c.extracted}
        )
    if not summary.ok:
        failed = "; ".join(f"{s.source}: {s.error}" for s in summary.failed)
        raise IngestError(f"{len(summary.failed)} of {len(summary.sources)} source(s) failed: {failed}")
    return summary.as_dict()


if __name__ == "__main__":
    config = Path("assetmatch.yaml")
    ingest.serve(
        name="hourly", cron="0 * * * *", parameters={"config_path": str(config) if config.exists() else None}
    )
