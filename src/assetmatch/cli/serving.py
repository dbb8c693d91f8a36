"""CLI of the serving stage: `assetmatch serve`, `assetmatch ab report`, `assetmatch api-key new|hash`.

uvicorn, torch and the app are imported inside the commands so `assetmatch --help` stays fast.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.table import Table

from assetmatch.cli.common import _state, console, friendly_errors, settings
from assetmatch.config import CONFIG_ENV_VAR

ab_app = typer.Typer(help="Online A/B between each business's champion and challenger.", no_args_is_help=True)
key_app = typer.Typer(help="API keys: only their sha256 goes into serving.api_keys.", no_args_is_help=True)


def serve(
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default: serving.host)."),
    port: int | None = typer.Option(None, "--port", help="Port (default: serving.port)."),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Processes; each holds its own base model and adapters (RAM x workers)."
    ),
    batch_mode: str | None = typer.Option(
        None,
        "--batch-mode",
        help="serial (one pass per adapter; the default) or mixed (one pass across businesses).",
    ),
    reload_interval: float | None = typer.Option(
        None, "--reload-interval", help="Seconds between checks for a new champion or index (0: never)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the match API: one base model, every business's champion (and challenger) adapter.

    Docs at http://HOST:PORT/docs. SIGTERM / Ctrl-C drain in-flight requests and flush feedback.
    """
    import uvicorn

    # overrides travel as environment variables so that every worker process sees them (the
    # workers rebuild the settings from the environment: `assetmatch.serving.app:app_from_env`)
    if _state["config"] is not None:
        os.environ[CONFIG_ENV_VAR] = str(_state["config"])
    if batch_mode is not None:
        os.environ["ASSETMATCH_SERVING__BATCH_MODE"] = batch_mode
    if reload_interval is not None:
        os.environ["ASSETMATCH_SERVING__RELOAD_INTERVAL_S"] = str(reload_interval)
    cfg = settings()  # validates the config (and the overrides) before any worker starts
    if not cfg.serving.api_keys and cfg.serving.require_api_key:
        console.print("[yellow]warning:[/yellow] serving.api_keys is empty: every request will get 401")
    uvicorn.run(
        "assetmatch.serving.app:app_from_env",
        factory=True,
        host=host or cfg.serving.host,
        port=port or cfg.serving.port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=30,
    )


@ab_app.command("report")
def ab_report_cmd(
    business: str | None = typer.Option(None, "--business", "-b", help="Only this business."),
    days: float | None = typer.Option(None, "--days", help="Only feedback of the last N days."),
    rounds: int = typer.Option(2000, "--rounds", min=100, help="Bootstrap resamples."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Join feedback to the arm that served it; set F1 (selected vs used) per arm with 95% bootstrap CIs."""
    from assetmatch.lake import tables as T
    from assetmatch.lake.delta import Lake
    from assetmatch.serving.ab import ab_report

    cfg = settings()
    with friendly_errors(ValueError, OSError):
        rows: list[dict[str, Any]] = Lake.from_settings(cfg).read_arrow(T.FEEDBACK).to_pylist()
    if business:
        rows = [r for r in rows if r["business"] == business]
    if days is not None:
        since = datetime.now(UTC) - timedelta(days=days)
        rows = [r for r in rows if r["ts"] is not None and r["ts"] >= since]
    reports = ab_report(rows, rounds=rounds)
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in reports]))
        return
    if not reports:
        console.print("no feedback yet")
        return
    table = Table(title="online A/B: set F1 of selected vs used tables")
    for column in ("business", "arm", "n", "set F1", "95% CI", "model versions", "challenger - champion"):
        table.add_column(column)
    for report in reports:
        for i, arm in enumerate(report.arms):
            diff = ""
            if i == 0 and report.diff is not None:
                diff = f"{report.diff:+.3f} [{report.diff_ci_low:+.3f}, {report.diff_ci_high:+.3f}]"
            table.add_row(
                report.business if i == 0 else "",
                arm.arm,
                str(arm.n),
                f"{arm.mean:.3f}",
                f"[{arm.ci_low:.3f}, {arm.ci_high:.3f}]",
                ", ".join(arm.model_versions),
                diff,
            )
    console.print(table)


@key_app.command("new")
def key_new() -> None:
    """Make a random API key; give the key to the caller, put the hash in serving.api_keys."""
    from assetmatch.serving.auth import hash_key

    key = secrets.token_urlsafe(32)
    console.print(f"key:    {key}\nsha256: {hash_key(key)}")


@key_app.command("hash")
def key_hash(
    key: str = typer.Option(..., prompt=True, hide_input=True, help="The key (prompted if omitted)."),
) -> None:
    """sha256 of an existing key, for serving.api_keys."""
    from assetmatch.serving.auth import hash_key

    console.print(hash_key(key))


def register(app: typer.Typer) -> None:
    """Add `serve`, `ab` and `api-key` to the root app."""
    app.command("serve")(serve)
    app.add_typer(ab_app, name="ab")
    app.add_typer(key_app, name="api-key")
