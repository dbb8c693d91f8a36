"""`assetmatch features ...`: compute feature snapshots from the lake, load the online store, inspect.

Feast is imported inside the commands only (it takes 6-8 s), so `assetmatch --help` stays fast.
"""

from __future__ import annotations

import json

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from assetmatch.cli import common

features_app = typer.Typer(
    name="features",
    help="Feast features for ranking: build daily snapshots from the lake, materialize them online, inspect them.",
    no_args_is_help=True,
)


@features_app.command("materialize")
def materialize_cmd(
    full: bool = typer.Option(
        False,
        "--full",
        help="Recompute every snapshot day and reload the online store (default: only new days).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compute feature snapshots from the current lake versions (recorded) and load the online store.

    Incremental by default: new snapshot days are appended to the offline tables under the lake
    (features/asset_features, features/asset_pair_features) and `materialize_incremental` loads what is new.
    """
    settings = common.settings()
    with common.friendly_errors(ValueError, OSError):
        from assetmatch.features.store import materialize

        with Progress(
            TextColumn("snapshot days"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=common.console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("build", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = materialize(settings, full=full, progress=progress)
    data = report.as_dict()
    if as_json:
        common.console.print_json(json.dumps(data, default=str))
        return
    table = Table(title=f"materialized ({report.mode}) → {report.online_store}", show_header=False)
    for key, value in data.items():
        table.add_row(key, str(value))
    common.console.print(table)


@features_app.command("apply")
def apply_cmd() -> None:
    """Register the feature repository (feast.repo_path) in the configured registry, as `feast apply` does."""
    settings = common.settings()
    with common.friendly_errors(ValueError, OSError):
        from assetmatch.features.store import apply_repo, open_store

        store = open_store(settings)
        objects = apply_repo(store, settings)
    common.console.print(
        f"applied project [bold]{store.project}[/bold]: {len(objects.entities)} entities, "
        f"{len(objects.feature_views)} feature views, "
        f"services {', '.join(s.name for s in objects.feature_services)}"
    )


@features_app.command("show")
def show_cmd(
    asset_ids: list[str] = typer.Argument(..., help="asset ids, e.g. shop.dw.public.orders"),
    as_json: bool = typer.Option(False, "--json", help="Print the features as JSON."),
) -> None:
    """Show the online features of tables (defaults where a table has none: see the log line)."""
    settings = common.settings()
    with common.friendly_errors(ValueError, OSError):
        from assetmatch.features.provider import FeastFeatureProvider

        provider = FeastFeatureProvider(settings)
        values = provider.online(asset_ids)
    if as_json:
        common.console.print_json(json.dumps(values))
        return
    table = Table(title="online features")
    table.add_column("feature")
    for asset_id in values:
        table.add_column(asset_id, justify="right")
    for name in provider.feature_names:
        table.add_row(name, *(f"{values[a][name]:g}" for a in values))
    common.console.print(table)


def register(app: typer.Typer) -> None:
    """Add `assetmatch features ...` to the root app."""
    app.add_typer(features_app, name="features")
