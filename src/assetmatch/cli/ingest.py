"""CLI of the ingest stage: `assetmatch ingest`, `assetmatch sources list`, `assetmatch lake ...`.

The pipeline (`assetmatch.ingest`) and the lake (`assetmatch.lake.delta`) are imported inside
the commands: they pull in pyarrow and deltalake, and validation pulls in Great Expectations.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from assetmatch.cli import common

if TYPE_CHECKING:
    from assetmatch.ingest import IngestSummary

sources_app = typer.Typer(help="Configured sources and installed source plugins.", no_args_is_help=True)
lake_app = typer.Typer(
    help="Look into the Delta lake: versions, rows at any version, one asset's history, quarantine.",
    no_args_is_help=True,
)

COUNT_FIELDS = ("extracted", "inserted", "updated", "unchanged", "soft_deleted", "skipped", "quarantined")
# short headers keep the table readable in an 80-column terminal; the caption spells them out. Restored
# rows and a source's status are in the lines under the table (a failed source is also marked ✗).
COUNT_HEADERS = ("read", "new", "upd", "same", "del", "skip", "quar")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _print_json(data: Any) -> None:
    common.console.print_json(json.dumps(data, default=_json_default, ensure_ascii=False))


def _summary_table(summary: IngestSummary) -> Table:
    table = Table(
        title=f"ingest run {summary.run_id}",
        caption="read=extracted new=inserted upd=updated same=unchanged del=soft-deleted "
        "skip=skipped by the source (unreadable) quar=quarantined (skipped or refused by validation)",
    )
    rows: list[tuple[str, str, list[str], str]] = []
    for source in summary.sources:
        name = (
            f"[green]{escape(source.source)}[/green]"
            if source.ok
            else f"[red]{escape(source.source)} ✗[/red]"
        )
        tables = [
            (t, c)
            for t, c in source.tables.items()
            if c.extracted or c.soft_deleted or c.not_read or c.quarantined or c.restored
        ] or [("assets", source.tables["assets"])]
        for i, (table_name, counts) in enumerate(tables):
            rows.append(
                (
                    name if i == 0 else "",
                    table_name,
                    [str(getattr(counts, f)) for f in COUNT_FIELDS],
                    f"{source.duration_s:.1f}s" if i == 0 else "",
                )
            )
    table.add_column("source", no_wrap=True, overflow="ellipsis")
    table.add_column("table", no_wrap=True, overflow="ellipsis")
    # numbers are never cut: on a narrow terminal the names are
    for j, header in enumerate(COUNT_HEADERS):
        width = max([len(header), *(len(r[2][j]) for r in rows)])
        table.add_column(header, justify="right", no_wrap=True, min_width=width)
    table.add_column("time", justify="right", no_wrap=True, min_width=max([4, *(len(r[3]) for r in rows)]))
    for source_cell, table_name, cells, elapsed in rows:
        table.add_row(source_cell, table_name, *cells, elapsed)
    return table


def _notes(summary: IngestSummary) -> list[str]:
    """One line per source with what the table does not show: tables not re-read, quarantine rows."""
    lines = []
    for source in summary.sources:
        assets = source.tables["assets"]
        parts = [] if source.ok else ["failed"]
        if assets.restored:
            parts.append(f"{assets.restored} tables restored")
        if assets.not_read:
            parts.append(f"{assets.not_read} tables unchanged at the source (not read)")
        refused = sum(c.quarantined for c in source.tables.values())
        if refused:
            again = refused - source.quarantine_stored
            parts.append(
                f"{source.quarantine_stored} new quarantine rows"
                + (f", {again} already there" if again > 0 else "")
                + f" (assetmatch lake quarantine -s {source.source})"
            )
        if parts:
            lines.append(f"{source.source}: " + "; ".join(parts))
    return lines


def _one_line(error: str | None) -> str:
    lines = [line.strip() for line in (error or "unknown error").strip().splitlines() if line.strip()]
    return lines[0] + (" [...]" if len(lines) > 1 else "") if lines else "unknown error"


@contextmanager
def _logging(verbose: bool, log_file: Path | None) -> Iterator[None]:
    """Where the pipeline's log records go while the command runs: the log file (everything,
    tracebacks included) and, with --verbose, the terminal. Without either nothing is printed:
    a failing source's reason is the one-line error at the end."""
    logger = logging.getLogger("assetmatch")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    handlers: list[logging.Handler] = [logging.NullHandler()]
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file_handler)
    if verbose:
        from rich.logging import RichHandler

        handlers.append(RichHandler(console=common.err_console, rich_tracebacks=True, show_path=False))
    logger.handlers = handlers
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


def ingest(
    source: list[str] = typer.Option(
        None,
        "--source",
        "-s",
        help="Ingest only this configured source (repeatable). Default: every enabled one.",
    ),
    run_id: str | None = typer.Option(
        None,
        "--run-id",
        help="Run id recorded on every row and Delta commit (default: time + random suffix).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full summary as JSON instead of a table."),
    full_read: bool = typer.Option(
        False,
        "--full-read",
        help="Read every table, even those the source reports unchanged since the last ingest "
        "(PostgreSQL and MySQL/MariaDB sql sources read only new or changed tables by default).",
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Print the pipeline's log on stderr, with the traceback of a failing source."
    ),
    log_file: Path | None = typer.Option(
        None,
        "--log-file",
        envvar="ASSETMATCH_LOG_FILE",
        help="Append the pipeline's log, tracebacks included, to this file.",
    ),
) -> None:
    """Extract every configured source, validate each batch with the GX suites in expectations/, and
    merge the good rows into the lake (refused rows go to the quarantine table with a reason).

    Exits 1 when a source failed: one line per failed source says why (the traceback goes to
    --log-file, or the terminal with --verbose); the other sources are still ingested.
    """
    from assetmatch.ingest import run_ingest

    settings = common.settings()
    with common.friendly_errors(FileNotFoundError), _logging(verbose, log_file):
        if not settings.sources:
            raise FileNotFoundError("no sources configured: add a `sources:` list to the config file")
        summary = run_ingest(
            settings, sources=source or None, run_id=run_id, progress=not as_json, full_read=full_read
        )
    if as_json:
        _print_json(summary.as_dict())
    else:
        common.console.print(_summary_table(summary))
        for line in _notes(summary):
            common.console.print(line)
        changed = {t: (summary.versions_before.get(t), v) for t, v in summary.versions_after.items()}
        moved = [f"{t} {a if a is not None else '-'}→{b}" for t, (a, b) in changed.items() if a != b]
        common.console.print("lake versions: " + (", ".join(moved) if moved else "unchanged"))
    for failed in summary.failed:
        common.err_console.print(
            f"[red]source {escape(failed.source)} failed:[/red] {escape(_one_line(failed.error))}",
            highlight=False,
        )
    if not summary.ok:
        if not verbose:
            hint = f"the log in {log_file}" if log_file is not None else "--verbose"
            common.err_console.print(f"[dim]details: {hint}[/dim]")
        raise typer.Exit(1)


@sources_app.command("list")
def sources_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The sources in the config file, and the source plugin types installed."""
    from assetmatch.sources import registry

    settings = common.settings()
    installed = registry.available()
    if as_json:
        _print_json(
            {
                "sources": [s.model_dump(mode="json", exclude={"options"}) for s in settings.sources],
                "installed": installed,
            }
        )
        return
    table = Table(title="configured sources")
    for col in ("name", "type", "business", "mode", "enabled", "plugin"):
        table.add_column(col)
    for spec in settings.sources:
        business = spec.business or ", ".join(sorted(set(spec.business_map.values()))) or "-"
        plugin = "[green]installed[/green]" if spec.type in installed else "[red]missing[/red]"
        table.add_row(spec.name, spec.type, business, spec.mode, "yes" if spec.enabled else "no", plugin)
    common.console.print(table)
    common.console.print("installed source types: " + (", ".join(installed) or "none"))


def _lake() -> Any:
    from assetmatch.lake.delta import Lake

    return Lake.from_settings(common.settings())


@lake_app.command("history")
def lake_history(
    table: str | None = typer.Argument(
        None, help="Lake table (assets, query_log, ...). Default: every table."
    ),
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="Most recent commits to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delta commits, newest first, with the run that wrote each. Without TABLE: each table's version."""
    from assetmatch.lake import tables as T

    lake = _lake()
    with common.friendly_errors(KeyError, ValueError):
        if table is None:
            versions = lake.versions()
            if as_json:
                _print_json(versions)
                return
            out = Table(title=f"lake {lake.uri}")
            out.add_column("table")
            out.add_column("version", justify="right")
            out.add_column("last run")
            out.add_column("last commit")
            for name in T.SCHEMAS:
                last = lake.history(name, 1)
                when = (
                    datetime.fromtimestamp(last[0]["timestamp"] / 1000).isoformat(" ", "seconds")
                    if last
                    else ""
                )
                run = last[0].get("assetmatch.run_id", "") if last else ""
                version = versions[name]
                out.add_row(name, "-" if version is None else str(version), run, when)
            common.console.print(out)
            return
        commits = lake.history(table, limit)
    if as_json:
        _print_json(commits)
        return
    out = Table(title=f"{table}: last {limit} commits")
    for col in ("version", "time", "operation", "run id", "rows"):
        out.add_column(col)
    for c in commits:
        metrics = c.get("operationMetrics") or {}
        rows = ", ".join(
            f"{k.removeprefix('num_target_rows_').removeprefix('num_')}={v}"
            for k, v in metrics.items()
            if k in ("num_added_rows", "num_target_rows_inserted", "num_target_rows_updated") and v
        )
        when = datetime.fromtimestamp(c["timestamp"] / 1000).isoformat(" ", "seconds")
        operation = c.get("assetmatch.operation") or c.get("operation", "")
        out.add_row(str(c["version"]), when, operation, c.get("assetmatch.run_id", ""), rows)
    common.console.print(out)


def _parse_where(where: list[str]) -> list[tuple[str, str, Any]]:
    filters: list[tuple[str, str, Any]] = []
    for item in where:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise ValueError(f"--where {item!r}: expected COLUMN=VALUE")
        parsed: Any = {"true": True, "false": False}.get(value.lower(), value)
        filters.append((column.strip(), "=", parsed))
    return filters


@lake_app.command("show")
def lake_show(
    table: str = typer.Argument(
        ..., help="Lake table: assets, query_log, requirements, glossary, quarantine, ..."
    ),
    version: int | None = typer.Option(
        None, "--version", "-v", help="Read this Delta version (time travel)."
    ),
    where: list[str] = typer.Option(
        None, "--where", "-w", help="COLUMN=VALUE filter (repeatable), e.g. business=g1."
    ),
    asset_id: str | None = typer.Option(
        None,
        "--id",
        help="assets only: this asset's history across versions (what changed, when, by which run).",
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Rows to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows instead of a table."),
) -> None:
    """Rows of one lake table, at its latest or a given version; or one asset's history with --id."""
    lake = _lake()
    with common.friendly_errors(KeyError, ValueError):
        if asset_id is not None:
            if table != "assets":
                raise ValueError("--id works with the assets table only")
            changes = lake.asset_history(asset_id)
            if not changes:
                raise ValueError(f"no asset {asset_id!r} in the lake")
            _show_asset_history(asset_id, changes[:limit], as_json)
            return
        lake.path(table)
        data = lake.read_arrow(table, version=version, filters=_parse_where(where or []) or None)
    rows = data.slice(0, limit).to_pylist()
    if as_json:
        _print_json(rows)
        return
    label = f"{table} @ version {version if version is not None else lake.version(table)}"
    title = f"{label}: {min(limit, data.num_rows)} of {data.num_rows} rows"
    columns = DISPLAY.get(table) or [c for c in data.column_names if c not in HIDDEN]
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [min(max([len(col), *(len(r[i]) for r in cells)]), 48) for i, col in enumerate(columns)]
    if sum(widths) + 3 * len(columns) <= common.console.width:
        out = Table(title=title)
        for col in columns:
            out.add_column(col, overflow="ellipsis", no_wrap=True, max_width=48)
        for row_cells in cells:
            out.add_row(*row_cells)
        common.console.print(out)
    else:  # too wide for the terminal: one block per row instead of squeezed columns
        common.console.print(f"[bold]{title}[/bold]")
        for row_cells in cells:
            block = Table(show_header=False, box=None, padding=(0, 1))
            block.add_column(style="cyan", no_wrap=True)
            block.add_column(overflow="fold")
            for col, value in zip(columns, row_cells):
                block.add_row(col, value)
            common.console.rule(style="dim")
            common.console.print(block)
    common.console.print("[dim]--json shows every column[/dim]")


# columns shown in the table view (all of them with --json)
DISPLAY: dict[str, list[str]] = {
    "assets": ["asset_id", "kind", "comment", "columns", "deleted", "updated_at", "run_id"],
    "query_log": ["query_id", "ts", "user", "business", "sql", "tables"],
    "requirements": ["id", "business", "split", "text", "gold_assets"],
    "glossary": ["business", "term", "synonyms", "assets"],
    "quarantine": ["quarantined_at", "run_id", "source", "target_table", "record_key", "reason"],
}
HIDDEN = {"content_hash", "properties", "payload", "first_seen_at", "metrics"}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(" ", "seconds")
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return f"{len(value)} items"
        return ", ".join(str(v) for v in value)
    return " ".join(str(value).split())


def _show_asset_history(asset_id: str, changes: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json(changes)
        return
    out = Table(title=f"history of {asset_id}")
    for col in ("version", "time", "change", "run id", "comment", "columns", "deleted at"):
        out.add_column(col, overflow="fold", max_width=50)
    for c in changes:
        row = c["row"]
        out.add_row(
            str(c["version"]),
            c["timestamp"].isoformat(" ", "seconds"),
            c["change"],
            c["run_id"] or "",
            row.get("comment") or "",
            str(len(row.get("columns") or [])),
            _cell(row.get("deleted_at")),
        )
    common.console.print(out)


@lake_app.command("quarantine")
def lake_quarantine(
    run_id: str | None = typer.Option(None, "--run-id", help="Only this run's refused rows."),
    source: str | None = typer.Option(None, "--source", "-s", help="Only this source's refused rows."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Rows to show (newest last)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows, payloads included."),
) -> None:
    """Rows refused by validation, with the reason and the run that refused them."""
    rows = _lake().read_quarantine(run_id=run_id, source=source)
    shown = rows[-limit:]
    if as_json:
        _print_json(shown)
        return
    out = Table(title=f"quarantine: {len(shown)} of {len(rows)} rows")
    for col in ("time", "run id", "source", "table", "key", "reason"):
        out.add_column(col, overflow="fold", max_width=48)
    for r in shown:
        out.add_row(
            _cell(r["quarantined_at"]),
            r["run_id"],
            r["source"],
            r["target_table"],
            r["record_key"],
            r["reason"],
        )
    common.console.print(out)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command("ingest")(ingest)
    app.add_typer(sources_app, name="sources")
    app.add_typer(lake_app, name="lake")
