"""`assetmatch ops up`: the Prefect UI, a worker and the MLflow UI on one machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from assetmatch.cli import common

ops_app = typer.Typer(help="Run the platform's services locally (Prefect server + worker, MLflow UI).")

PREFECT_FILE = Path("infra/prefect/prefect.yaml")


def _tool(name: str) -> str:
    """Path of a console script installed beside this Python (the venv), else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise typer.BadParameter(f"{name} is not installed in this environment")
    return found


def _wait_healthy(url: str, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not become healthy at {url} within {timeout_s:.0f} s")


@ops_app.command("up")
def up(
    prefect_port: int = typer.Option(4200, help="Port of the Prefect server (UI at http://127.0.0.1:PORT)."),
    mlflow_port: int = typer.Option(5000, help="Port of the MLflow UI."),
    deploy: bool = typer.Option(
        True, help="Create the work pools and deployments from infra/prefect/prefect.yaml."
    ),
    worker: bool = typer.Option(True, help="Start a process worker on the `default` pool."),
) -> None:
    """Start a local Prefect server (with UI), a worker and the MLflow UI; Ctrl-C stops them all."""
    settings = common.settings()
    if not PREFECT_FILE.exists():
        raise typer.BadParameter(
            f"{PREFECT_FILE} not found: run `assetmatch ops up` from the repository root"
        )
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    # the deployments' pull step moves each flow run to the repository root (see prefect.yaml)
    env = {**os.environ, "PREFECT_API_URL": api_url, "ASSETMATCH_REPO_ROOT": str(Path.cwd().resolve())}
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], name: str) -> None:
        common.console.print(f"[cyan]starting[/cyan] {name}: {Path(args[0]).name} {' '.join(args[1:])}")
        procs.append(subprocess.Popen(args, env=env))

    try:
        start(
            [_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            "Prefect server",
        )
        _wait_healthy(f"{api_url}/health", 90, "Prefect server")
        if deploy:
            prefect = _tool("prefect")
            for pool, kind in (("default", "process"), ("gpu", "process")):
                subprocess.run(
                    [prefect, "work-pool", "create", pool, "--type", kind, "--overwrite"], env=env, check=True
                )
            subprocess.run(
                [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
                env=env,
                check=True,
            )
        if worker:
            start([_tool("prefect"), "worker", "start", "--pool", "default"], "Prefect worker")
        start(
            [_tool("mlflow"), "ui", "--backend-store-uri", settings.mlflow.tracking_uri, "--host", "127.0.0.1",
             "--port", str(mlflow_port)],
            "MLflow UI",
        )  # fmt: skip
        common.console.print(
            f"\n[green]up[/green]  Prefect UI: http://127.0.0.1:{prefect_port}   MLflow UI: http://127.0.0.1:{mlflow_port}"
            "\n    Ctrl-C stops everything."
        )
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        failed = [p.args for p in procs if p.poll() not in (None, 0)]
        if failed:
            raise RuntimeError(f"a service exited: {failed}")
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def nightly(
    full: bool = typer.Option(
        False, "--full", help="Rebuild indexes and features and retrain every business."
    ),
    business: list[str] | None = typer.Option(
        None, "--business", "-b", help="Limit training and promotion to this business (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run the nightly pipeline in this process (the same stages as the `nightly` flow): ingest ->
    indexes + coarse fit -> features -> train changed businesses -> A/B gate. Stages whose inputs did
    not change skip themselves; exit 1 when a part failed."""
    import json

    from rich.markdown import Markdown

    from assetmatch.pipeline import run_nightly

    result = run_nightly(common.settings(), full=full, businesses=business or None)
    if as_json:
        common.console.print_json(json.dumps(result.as_dict(), default=str))
    else:
        common.console.print(Markdown(result.markdown()))
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `ops` and `nightly` commands to the root app."""
    app.add_typer(ops_app, name="ops")
    app.command("nightly")(nightly)
