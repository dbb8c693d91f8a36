"""`assetmatch demo`: build the sample warehouse of three games and run the pipeline end to end."""

from __future__ import annotations

from pathlib import Path

import typer

from assetmatch.cli import common
from assetmatch.serving.threads import default_threads, limit_threads_before_load


def demo(
    dir: Path = typer.Option(
        Path(".assetmatch/demo"), "--dir", help="Folder of the demo; nothing outside it is written."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the folder first (lake, indexes, models too)."),
    reference_date: str | None = typer.Option(
        None,
        "--reference-date",
        help="The demo's 'today' as YYYY-MM-DD: the query log covers the 90 days before it (default: today).",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the generator (same seed, same files)."),
    step: list[str] | None = typer.Option(
        None, "--step", "-s", help="Run only this step (repeatable); see --list-steps."
    ),
    list_steps: bool = typer.Option(False, "--list-steps", help="List the steps and exit."),
    keep_serving: bool = typer.Option(
        False, "--keep-serving", help="After the last step, keep the matching API up until Ctrl-C."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="Threads per math library (OpenMP, BLAS, torch); default: half the CPU cores, at most 4. "
        "An explicit OMP_NUM_THREADS in the environment wins.",
    ),
) -> None:
    """Build a sample warehouse of 3 mobile games (SQLite, ~40 tables each, query logs, glossary,
    labelled requirements) and run the whole pipeline on it, step by step.

    Everything lands in --dir, the demo's own assetmatch.yaml included; point any other command at it
    with `assetmatch --config DIR/assetmatch.yaml ...`.
    """
    limit_threads_before_load(threads or default_threads())  # before the steps import the math libraries
    from assetmatch.demo.pipeline import (
        STEPS,
        STEPS_FILE,
        DemoContext,
        run_steps,
        timing_table,
        write_step_times,
    )
    from assetmatch.demo.warehouse import DEFAULT_SEED

    if list_steps:
        for number, s in enumerate(STEPS, start=1):
            common.console.print(f"{number}. [bold]{s.name}[/bold]: {s.description}")
        return
    ctx = DemoContext(
        dir=dir,
        seed=DEFAULT_SEED if seed is None else seed,
        reference_date=reference_date,
        fresh=fresh,
        console=common.console,
        keep_serving=keep_serving,
    )
    with common.friendly_errors(ValueError, FileNotFoundError, RuntimeError):
        results = run_steps(ctx, only=step)
    common.console.print(timing_table(results))
    if ctx.paths is not None:
        write_step_times(results, dir / STEPS_FILE)
        common.console.print(f"config: [cyan]{ctx.paths.config}[/cyan]")


def register(app: typer.Typer) -> None:
    """Add `assetmatch demo` to the root app."""
    app.command("demo")(demo)
