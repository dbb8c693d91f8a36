"""`assetmatch ops up`: the Prefect UI, a worker per work pool and the MLflow UI on one machine.

It behaves like a service: every port is checked before anything starts; each child runs in its own
process group, so SIGTERM, SIGINT (Ctrl-C) or SIGHUP stops all of them (the Prefect server with its
web process, the workers with their flow runs, MLflow with its web workers); "up" is printed only
once Prefect, MLflow and every started worker answer. The config travels: its absolute path goes to
every child as $ASSETMATCH_CONFIG and into every deployment's default `config_path`. docs/ops.md is
the runbook.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import typer
import yaml

from assetmatch.cli import common
from assetmatch.config import CONFIG_ENV_VAR, ConfigError

ops_app = typer.Typer(help="Run the platform's services locally (Prefect server + workers, MLflow UI).")

PREFECT_FILE = Path("infra/prefect/prefect.yaml")
STOP_TIMEOUT_S = 20.0
"""How long a child gets to stop after SIGTERM before its process group is killed."""


class OpsError(RuntimeError):
    """A service could not start or stopped; the message says which and why."""


def _tool(name: str) -> str:
    """Path of a console script installed beside this Python (the venv), else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise OpsError(f"{name} is not installed in this environment")
    return found


# ---- what gets deployed ----------------------------------------------------------------------------
def deployment_spec(spec: Mapping[str, Any], config: Path) -> dict[str, Any]:
    """prefect.yaml with every deployment's `config_path` parameter defaulting to `config` (absolute),
    so a scheduled run or a UI quick run uses the config ops up was started with."""
    if not config.is_absolute():
        raise ValueError(f"config path must be absolute (deployments run in other directories): {config}")
    out = copy.deepcopy(dict(spec))
    for deployment in out.get("deployments") or []:
        deployment["parameters"] = {**(deployment.get("parameters") or {}), "config_path": str(config)}
    return out


def work_pools(spec: Mapping[str, Any]) -> list[str]:
    """The work pools the deployments use, in order of first use."""
    pools: list[str] = []
    for deployment in spec.get("deployments") or []:
        name = (deployment.get("work_pool") or {}).get("name")
        if name and name not in pools:
            pools.append(name)
    return pools


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port (binding as a server would: SO_REUSEADDR set, so a
    closed connection's TIME_WAIT does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


# ---- children ------------------------------------------------------------------------------------------
class Services:
    """Child processes, each the leader of its own process group, stopped together."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        common.console.print(f"[cyan]starting[/cyan] {name}: {Path(args[0]).name} {' '.join(args[1:])}")
        # own session: a terminal's Ctrl-C reaches only us, and stop() can end the child's whole tree
        proc = subprocess.Popen(args, env=self.env, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def run(self, name: str, args: list[str]) -> None:
        """Run a short command to completion (stopped with the others if we are stopped meanwhile)."""
        proc = self.start(name, args)
        if proc.wait() != 0:
            raise OpsError(f"{name} failed (exit {proc.returncode}): {' '.join(args)}")
        self.procs.remove((name, proc))

    def exited(self) -> list[str]:
        return [f"{name} (exit {p.returncode})" for name, p in self.procs if p.poll() is not None]

    def check_alive(self) -> None:
        if gone := self.exited():
            raise OpsError(f"a service exited: {', '.join(gone)}")

    def stop(self) -> None:
        """SIGTERM every child's process group, newest first; SIGKILL what is left after the timeout."""
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _name, proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)  # the group may outlive its leader (web workers, flow runs)
            proc.wait()
        self.procs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, services: Services) -> None:
    """Poll `check` until it is true; fail when a child exits meanwhile or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        services.check_alive()
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise OpsError(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.5)


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2.0).status_code == 200


def _pool_ready(api_url: str, pool: str) -> bool:
    response = httpx.get(f"{api_url}/work_pools/{pool}", timeout=2.0)
    return response.status_code == 200 and response.json().get("status") == "READY"


class _Stopped(Exception):
    """Raised in the main thread by a stop signal, so that `finally` stops the children."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


# ---- the command ----------------------------------------------------------------------------------------
@ops_app.command("up")
def up(
    prefect_port: int = typer.Option(4200, help="Port of the Prefect server (UI at http://127.0.0.1:PORT)."),
    mlflow_port: int = typer.Option(5000, help="Port of the MLflow UI."),
    deploy: bool = typer.Option(
        True, help="Create the work pools and deployments from infra/prefect/prefect.yaml."
    ),
    worker: bool = typer.Option(True, help="Start a process worker for every work pool deployed to."),
    no_worker_pool: list[str] = typer.Option(
        [],
        "--no-worker-pool",
        help="Start no worker for this pool (repeatable), e.g. gpu when real GPU workers serve it elsewhere.",
    ),
    ready_timeout_s: float = typer.Option(240.0, help="How long each service may take to answer."),
) -> None:
    """Start a local Prefect server (with UI), a worker per work pool and the MLflow UI; SIGTERM or
    Ctrl-C stops them all. Deployments and workers use the config given with -c (made absolute)."""
    try:
        config = _config_file()
    except ConfigError as exc:
        common.err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    settings = common.settings()
    if not PREFECT_FILE.exists():
        common.err_console.print(
            f"[red]error:[/red] {PREFECT_FILE} not found: run `assetmatch ops up` from the repository root"
        )
        raise typer.Exit(2)
    busy = [f"{what} port {port}" for what, port in (("Prefect", prefect_port), ("MLflow", mlflow_port))
            if port_in_use(port)]  # fmt: skip
    if busy:  # before anything starts: a server already there is not ours to stop or trust
        common.err_console.print(
            f"[red]error:[/red] {' and '.join(busy)} already in use on 127.0.0.1; stop what listens there "
            "or pick another port (--prefect-port / --mlflow-port)"
        )
        raise typer.Exit(2)
    spec = deployment_spec(yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8")), config)
    pools = work_pools(spec)  # with --no-deploy, the deployments on the server came from the same file
    served = [p for p in pools if worker and p not in no_worker_pool]
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        CONFIG_ENV_VAR: str(config),
        # the deployments' pull step moves each flow run to the repository root (see prefect.yaml)
        "ASSETMATCH_REPO_ROOT": str(Path.cwd().resolve()),
    }
    services = Services(env)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        prefect = _tool("prefect")
        services.start("Prefect server",
                       [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)])  # fmt: skip
        wait_until(lambda: _answers(f"{api_url}/health"), ready_timeout_s,
                   f"the Prefect server did not answer at {api_url}/health", services)  # fmt: skip
        if deploy:
            for pool in pools:
                services.run(f"work pool {pool}",
                             [prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"])  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="assetmatch-deploy-") as tmp:
                rendered = Path(tmp) / "prefect.yaml"
                rendered.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
                services.run(
                    "deployments",
                    [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(rendered)],
                )
        for pool in served:
            services.start(f"Prefect worker ({pool})",
                           [prefect, "worker", "start", "--pool", pool, "--type", "process", "--name", f"local-{pool}"])  # fmt: skip
        services.start("MLflow UI",
                       [_tool("mlflow"), "ui", "--backend-store-uri", settings.mlflow.tracking_uri,
                        "--host", "127.0.0.1", "--port", str(mlflow_port)])  # fmt: skip
        for pool in served:
            wait_until(lambda pool=pool: _pool_ready(api_url, pool), ready_timeout_s,  # type: ignore[misc]
                       f"no worker came online on pool {pool!r}", services)  # fmt: skip
        wait_until(lambda: _answers(f"http://127.0.0.1:{mlflow_port}/health"), ready_timeout_s,
                   f"the MLflow UI did not answer on port {mlflow_port}", services)  # fmt: skip
        common.console.print(
            f"\n[green]up[/green]  Prefect UI: http://127.0.0.1:{prefect_port}   MLflow UI: http://127.0.0.1:{mlflow_port}"
            f"\n    config: {config}"
            f"\n    workers: {', '.join(served) or 'none'}"
        )
        for pool in (p for p in pools if p not in served):
            common.console.print(
                f"    [yellow]pool {pool!r} has no worker here[/yellow]: its deployments' runs wait (Late) "
                "until a worker polls it"
                + ("; nightly trains in-process meanwhile" if pool == settings.training.work_pool else "")
            )
        common.console.print("    SIGTERM or Ctrl-C stops everything.")
        while True:
            services.check_alive()
            time.sleep(1)
    except (KeyboardInterrupt, _Stopped) as stop:
        common.console.print(f"stopping ({'SIGINT' if isinstance(stop, KeyboardInterrupt) else stop})")
    except OpsError as exc:
        common.err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        # a second signal (an impatient Ctrl-C) while stopping must not leave children behind
        stopping = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *previous)}
        try:
            services.stop()
        finally:
            for sig, handler in {**stopping, **previous}.items():
                signal.signal(sig, handler)


def _config_file() -> Path:
    """The config ops up hands to its deployments and workers, absolute (see pipeline.config_file)."""
    from assetmatch.pipeline import config_file

    return config_file(common.config_path())


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
