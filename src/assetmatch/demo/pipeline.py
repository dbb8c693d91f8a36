"""The demo as an ordered list of named steps, each one library call, shown with rich progress.

A step is a name, a one-line description and a function `fn(ctx) -> summary`; `STEPS` keeps them
in run order. Every step calls the same library functions the CLI and the flows call (nothing is
re-implemented here), and leaves its result in `ctx.results[name]` for the steps after it.

    ctx = DemoContext(dir=Path(".assetmatch/demo"))
    run_steps(ctx)                       # everything
    run_steps(ctx, only=["generate"])    # just the sample warehouse
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from assetmatch.config import Settings, load_settings
from assetmatch.demo.warehouse import DEFAULT_SEED, DemoPaths, build_demo, load_demo


@dataclass
class DemoContext:
    """What the steps share: where the demo lives, its settings, and earlier steps' results."""

    dir: Path
    seed: int = DEFAULT_SEED
    reference_date: date | str | None = None
    fresh: bool = False
    console: Console = field(default_factory=Console)
    paths: DemoPaths | None = None
    results: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The demo's own settings (its assetmatch.yaml), loaded once the warehouse is generated."""
        if self._settings is None:
            if self.paths is None:
                raise RuntimeError("the demo warehouse has not been generated yet (run the `generate` step)")
            self._settings = load_settings(self.paths.config)
        return self._settings


INGEST_COLUMNS = ("assets", "query_log", "requirements", "glossary")

StepFn = Callable[[DemoContext], str]


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    fn: StepFn


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float
    summary: str


STEPS: list[Step] = []


def step(name: str, description: str) -> Callable[[StepFn], StepFn]:
    """Register `fn` as the next demo step."""

    def register(fn: StepFn) -> StepFn:
        if any(s.name == name for s in STEPS):
            raise ValueError(f"demo step {name!r} is registered twice")
        STEPS.append(Step(name, description, fn))
        return fn

    return register


def step_names() -> list[str]:
    return [s.name for s in STEPS]


# ---- the steps -----------------------------------------------------------------------------------
@step(
    "generate", "Generate the sample warehouse: 3 games, SQLite + catalog, query log, glossary, requirements"
)
def generate(ctx: DemoContext) -> str:
    ctx.paths = build_demo(ctx.dir, seed=ctx.seed, reference_date=ctx.reference_date, fresh=ctx.fresh)
    ctx._settings = None
    from assetmatch.demo import catalog

    tables = sum(len(catalog.game(b).tables) for b in ctx.paths.businesses)
    return (
        f"{len(ctx.paths.businesses)} games, {tables} tables, reference date "
        f"{ctx.paths.reference_date.isoformat()} -> {ctx.paths.root}"
    )


@step("ingest", "Ingest every source into the Delta lake (validate, quarantine, merge)")
def ingest(ctx: DemoContext) -> str:
    from assetmatch.ingest import run_ingest

    summary = run_ingest(ctx.settings)
    ctx.results["ingest_summary"] = summary
    table = Table(title=f"ingest run {summary.run_id}")
    table.add_column("source", no_wrap=True)
    table.add_column("status")
    for column in ("tables", "queries", "reqs", "terms", "quarantined", "s"):
        table.add_column(column, justify="right")
    for src in summary.sources:
        counts = src.tables
        table.add_row(
            src.source,
            "[green]ok[/green]" if src.ok else "[red]failed[/red]",
            *(f"{counts[t].inserted + counts[t].updated}/{counts[t].extracted}" for t in INGEST_COLUMNS),
            str(sum(c.quarantined for c in counts.values())),
            f"{src.duration_s:.1f}",
        )
    ctx.console.print(table)
    if not summary.ok:
        errors = "; ".join(f"{s.source}: {s.error}" for s in summary.failed)
        raise RuntimeError(f"ingest failed for {len(summary.failed)} source(s): {errors}")
    totals = summary.totals()
    quarantined = sum(c.quarantined for c in totals.values())
    return (
        f"{totals['assets'].extracted} tables, {totals['query_log'].extracted} queries, "
        f"{totals['requirements'].extracted} requirements, {totals['glossary'].extracted} glossary terms; "
        f"{quarantined} quarantined (lake {ctx.settings.lake.uri})"
    )


# ---- running -------------------------------------------------------------------------------------
def select_steps(only: Sequence[str] | None = None) -> list[Step]:
    """The registered steps, filtered to `only` (kept in run order); unknown names are an error."""
    if not only:
        return list(STEPS)
    unknown = sorted(set(only) - set(step_names()))
    if unknown:
        raise ValueError(f"unknown demo step(s) {unknown} (known: {step_names()})")
    return [s for s in STEPS if s.name in set(only)]


def run_steps(
    ctx: DemoContext, only: Sequence[str] | None = None, show_progress: bool = True
) -> list[StepResult]:
    """Run the steps in order with a progress display; stops at the first step that raises."""
    steps = select_steps(only)
    if "generate" not in {s.name for s in steps} and ctx.paths is None:
        ctx.paths = load_demo(ctx.dir)  # later steps alone: reuse the generated folder
    results: list[StepResult] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        console=ctx.console,
        disable=not show_progress,
        transient=False,
    ) as progress:
        for number, s in enumerate(steps, start=1):
            task = progress.add_task(f"{number}/{len(steps)} {s.name}: {s.description}", total=1)
            started = time.perf_counter()
            summary = s.fn(ctx)
            seconds = time.perf_counter() - started
            ctx.results[s.name] = summary
            progress.update(task, completed=1, description=f"[green]✓[/green] {number}/{len(steps)} {s.name}")
            if show_progress:
                progress.console.print(f"    {summary}")
            results.append(StepResult(s.name, seconds, summary))
    return results


def timing_table(results: Iterable[StepResult]) -> Table:
    """Per-step timings as a rich table."""
    table = Table(title="assetmatch demo", show_lines=False)
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    total = 0.0
    for r in results:
        total += r.seconds
        table.add_row(r.name, f"{r.seconds:.1f}", r.summary)
    table.add_row("[bold]total", f"[bold]{total:.1f}", "")
    return table
