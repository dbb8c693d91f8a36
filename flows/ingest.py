"""Prefect flow `ingest-metadata`: every configured source extracted, validated and merged in parallel.

Thin wiring over `assetmatch.ingest` / `assetmatch.pipeline` (the same per-source function the
`nightly` flow and `assetmatch ingest` run): one task per source (extract -> validate -> merge),
submitted together; the lake serializes the commits. A failed source is a Failed task with its
error and the others still run. A task is retried, with a growing delay, only when the source marked
its error transient (`pipeline.retry_if_transient`: a dropped connection, not a refused login); a
validation guard (a mostly-bad batch, a shrunken snapshot) or a broken plugin fails at once. Counts
and the validation summary are published as Prefect artifacts (`ingest-counts`,
`ingest-validation`); the flow fails when a source failed, after publishing them, and at once when
there is no usable config or no source to ingest.

Runs without a Prefect server (a temporary local API starts) or against one
(`PREFECT_API_URL`). `python flows/ingest.py` serves it on an hourly schedule.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from assetmatch import pipeline
from assetmatch.ingest import (
    TRACKED_TABLES,
    IngestError,
    IngestSummary,
    SourceSummary,
    failed_summary,
    ingest_source,
    new_run_id,
)
from assetmatch.lake.delta import Lake

COUNT_FIELDS = ("extracted", "inserted", "updated", "unchanged", "soft_deleted", "restored", "quarantined")
RETRY_DELAYS_S: list[float] = [10, 30, 90]


@task(
    name="ingest-source",
    task_run_name="ingest-{source}",
    retries=len(RETRY_DELAYS_S),
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=pipeline.retry_if_transient,
)
def ingest_source_task(config_path: str, source: str, run_id: str) -> SourceSummary:
    """Extract, validate and merge one source (see `assetmatch.ingest.ingest_source`); raises on failure."""
    settings = pipeline.settings_for_run(config_path)
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
    """Ingest the configured sources (or the named ones) into the lake, one parallel task each.

    Args:
        config_path: Path of the assetmatch.yaml to run with (absolute, or relative to the repository
            root). Empty: $ASSETMATCH_CONFIG of the worker, else ./assetmatch.yaml; the run fails at
            once, writing nothing, when none exists.
        sources: Names of the sources to ingest. Empty: every enabled source of the config.
        run_id: Id recorded on every row and lake commit of this run. Empty: a new one.
    """
    log = get_run_logger()
    config = str(pipeline.config_file(config_path))  # no usable config: fail before anything is written
    settings = pipeline.settings_for_run(config)
    specs = pipeline.ingest_sources(settings, sources)  # none: fail, an empty ingest is not a success
    lake = Lake.from_settings(settings)
    summary = IngestSummary(run_id=run_id or new_run_id())
    summary.versions_before = {t: lake.version(t) for t in TRACKED_TABLES}
    started = time.perf_counter()
    futures = [(spec, ingest_source_task.submit(config, spec.name, summary.run_id)) for spec in specs]
    for spec, future in futures:
        future.wait()
        value = pipeline.outcome(future.state)
        summary.sources.append(
            failed_summary(spec, summary.run_id, value) if isinstance(value, BaseException) else value
        )
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
