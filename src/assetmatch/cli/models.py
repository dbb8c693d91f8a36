"""CLI of the fine rankers: `assetmatch train`, `assetmatch promote`, `assetmatch models list|promote|rollback`.

Everything heavy (torch, peft, mlflow) is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from assetmatch.cli.common import console, friendly_errors, settings

if TYPE_CHECKING:
    from rich.progress import Progress

models_app = typer.Typer(
    help="Per-business LoRA ranker versions in the MLflow registry: list them, promote or roll back by hand.",
    no_args_is_help=True,
)


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def train(
    business: list[str] = typer.Option(
        None, "--business", "-b", help="Business to train (repeatable; default: all)."
    ),
    force: bool = typer.Option(False, "--force", help="Train even when the business's data did not change."),
    max_steps: int | None = typer.Option(
        None,
        "--max-steps",
        help="Cap on optimizer steps of each business's adapter (overrides config; the shared adapter "
        "keeps `training.shared_ranker`).",
    ),
    shared: bool = typer.Option(
        True,
        "--shared/--no-shared",
        help="Train the shared adapter first when two or more of the businesses have labelled "
        "requirements (`training.shared_adapter`); --no-shared keeps the registered one.",
    ),
) -> None:
    """Train the LoRA fine rankers of the businesses whose training data changed; register each as
    `challenger`.

    As the nightly train stage does: the shared adapter (all listed businesses' data) is trained
    first, each business's adapter starts from it, and the shared one calibrated for the business is
    registered beside it (`challenger-shared`). `assetmatch promote` then runs the A/B gate."""
    from assetmatch import pipeline
    from assetmatch.registry.training import SHARED, SHARED_ALIAS, run_shared_training, run_training
    from assetmatch.training.train import ranker_config

    cfg = settings()
    with friendly_errors(ValueError, FileNotFoundError, KeyError):
        plan = pipeline.plan_train(cfg, business or None, force)
        if not plan.todo and not plan.kept:
            raise ValueError("no business to train: configure `businesses` or ingest assets first")
        for name, why in sorted(plan.kept.items()):
            hint = " (--force to train)" if why.startswith("data unchanged") else ""
            console.print(f"[dim]{name}: skipped, {why}{hint}[/dim]")
        together = pipeline.shared_plan(cfg, plan) if shared else []
        if together:
            console.print(f"[bold]shared adapter[/bold]: {', '.join(together)}")
            with _progress() as progress:
                result, version = run_shared_training(cfg, together, progress=progress)
            console.print(
                f"  registered version {version} as {SHARED}@{SHARED_ALIAS}: "
                f"{result.fit.steps} steps in {result.fit.seconds:.0f} s"
            )
        for name in plan.todo:
            console.print(f"[bold]{name}[/bold]")
            with _progress() as progress:
                result, version = run_training(
                    cfg, name, config=ranker_config(cfg, max_steps=max_steps), progress=progress
                )
            m = result.reports["challenger"].means()
            base = result.reports["coarse_only"].means()
            console.print(
                f"  registered version {version} as challenger: validation (cross-fitted) "
                f"all-gold@3 {m['all_gold_at_3']:.3f} "
                f"(coarse-only {base['all_gold_at_3']:.3f}), set F1 {m['set_f1']:.3f} (coarse-only {base['set_f1']:.3f}), "
                f"{result.fit.steps} steps in {result.fit.seconds:.0f} s; {result.calibration.cascade.describe()}"
            )


def promote(
    business: list[str] = typer.Option(
        None, "--business", "-b", help="Business to evaluate (repeatable; default: all)."
    ),
) -> None:
    """Run the A/B gate: the challenger becomes champion only if it is better (or non-inferior and faster)."""
    from rich.markdown import Markdown

    from assetmatch.registry.mlflow import Registry
    from assetmatch.registry.promotion import evaluate_and_promote

    cfg = settings()
    with friendly_errors(ValueError, FileNotFoundError, KeyError):
        registry = Registry.from_settings(cfg)
        names = business or [b for b in registry.businesses() if registry.version_by_alias(b, "challenger")]
        if not names:
            console.print("no business has a challenger waiting")
            return
        for name in names:
            outcome = evaluate_and_promote(cfg, name)
            console.print(Markdown(outcome.markdown))


@models_app.command("list")
def list_models(
    business: str | None = typer.Option(None, "--business", "-b", help="Only this business."),
) -> None:
    """Registered ranker versions with their aliases (champion, challenger, previous) and gate verdicts."""
    from datetime import UTC, datetime

    from rich.table import Table

    from assetmatch.registry.mlflow import Registry

    cfg = settings()
    with friendly_errors(ValueError):
        registry = Registry.from_settings(cfg)
        table = Table(
            "business", "model", "version", "aliases", "created (UTC)", "gate verdict", "gate reason"
        )
        for name in [business] if business else registry.businesses():
            for v in registry.versions(name):
                created = datetime.fromtimestamp(v.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
                table.add_row(
                    name,
                    v.name,
                    v.version,
                    ", ".join(v.aliases),
                    created,
                    v.tags.get("gate.verdict", ""),
                    v.tags.get("gate.reason", "")[:60],
                )
        console.print(table)


@models_app.command("promote")
def promote_version(
    business: str = typer.Option(..., "--business", "-b", help="Business whose champion changes."),
    version: str = typer.Option(..., "--version", "-v", help="Registered version to make champion."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in MLflow and the promotions table)."),
) -> None:
    """Make a version champion by hand, bypassing the gate (recorded as `manual-promote`)."""
    from assetmatch.registry.promotion import manual_alias_change

    cfg = settings()
    with friendly_errors(ValueError):
        target = manual_alias_change(cfg, business, version, "promote", reason)
    console.print(f"{business}: champion is now version {target}")


@models_app.command("rollback")
def rollback(
    business: str = typer.Option(..., "--business", "-b", help="Business to roll back."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in MLflow and the promotions table)."),
) -> None:
    """Make the `previous` champion champion again (recorded as `manual-rollback`)."""
    from assetmatch.registry.promotion import manual_alias_change

    cfg = settings()
    with friendly_errors(ValueError):
        target = manual_alias_change(cfg, business, None, "rollback", reason)
    console.print(f"{business}: champion is now version {target}")


@models_app.command("pretrain")
def pretrain(
    data: list[Path] = typer.Option(
        ...,
        "--data",
        help="Benchmark folder (assets.jsonl.gz + requirements.jsonl.gz) whose `train` split is learned "
        "(repeatable); no other split is read.",
    ),
    out: Path = typer.Option(..., "--out", help="Folder the starting adapter is written to (replaced)."),
    steps: int = typer.Option(
        1200, "--steps", min=1, help="Optimizer steps (batches of --batch-size pairs)."
    ),
    max_length: int = typer.Option(
        96, "--max-length", min=16, help="Token budget of one (question, table) pair."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Pairs per step."),
    seed: int = typer.Option(13, "--seed", help="Seed of sampling, initialisation and data order."),
    hold_out: float = typer.Option(
        0.0,
        "--hold-out",
        min=0.0,
        max=0.9,
        help="Leave out the requirements a training with this validation fraction holds out (by "
        "query, else by text; the same every run): an adapter for benchmarking, whose validation "
        "questions it never saw (the benchmarks calibrate and gate on that share of `train`; "
        "default 0.15).",
    ),
    lora_dropout: float = typer.Option(
        0.1, "--lora-dropout", min=0.0, max=0.9, help="Dropout on the LoRA input."
    ),
) -> None:
    """Pre-train a starting adapter on public text-to-SQL data (how the packaged one was made).

    Every business's first adapter starts from it (`training.starting_adapter`): the general skill
    "does this table answer this request" is learned here once, not from each warehouse's few
    hundred labelled requirements. The ranker base is `ranker.base` of the config."""
    import shutil

    from assetmatch.ranking.config import RankerConfig
    from assetmatch.training.starting import pretrain as run_pretrain

    cfg = settings()
    with friendly_errors(ValueError, FileNotFoundError):
        config = RankerConfig(
            base=cfg.ranker.base,
            device=cfg.ranker.device,
            max_length=max_length,
            batch_size=batch_size,
            max_steps=steps,
            eval_every=0,
            seed=seed,
            lora_dropout=lora_dropout,
        )
        if out.exists():
            shutil.rmtree(out)
        with _progress() as progress:
            provenance = run_pretrain(data, out, config, progress=progress, hold_out=hold_out)
    console.print(
        f"starting adapter -> {out}: {provenance['steps']} steps over {provenance['pairs']} pairs of "
        f"{provenance['requirements']} requirements ({provenance['databases']} databases) in {provenance['seconds']:.0f} s"
    )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command("train")(train)
    app.command("promote")(promote)
    app.add_typer(models_app, name="models")
