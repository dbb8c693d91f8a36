"""Shared CLI plumbing: settings from --config, one console, friendly errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from assetmatch.config import ConfigError, Settings, load_settings, scrub

console = Console()
err_console = Console(stderr=True)

_state: dict[str, Any] = {"config": None}


def set_config_path(path: Path | None) -> None:
    _state["config"] = path


def config_path() -> Path | None:
    """The --config given to the root command (None: $ASSETMATCH_CONFIG or ./assetmatch.yaml apply)."""
    path: Path | None = _state["config"]
    return path


def settings(**overrides: Any) -> Settings:
    """Settings from the --config given to the root command (or assetmatch.yaml / env)."""
    try:
        return load_settings(_state["config"], **overrides)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(scrub(str(exc)))}")
        raise typer.Exit(2) from None


@contextmanager
def friendly_errors(*expected: type[BaseException]) -> Iterator[None]:
    """Print expected errors as one red line and exit 2, instead of a traceback."""
    catch: tuple[type[BaseException], ...] = (ConfigError, *expected)
    try:
        yield
    except catch as exc:  # secrets resolved from ${ENV} are masked (assetmatch.config.scrub)
        err_console.print(f"[red]error:[/red] {escape(scrub(str(exc)))}")
        raise typer.Exit(2) from None


Register = Callable[[typer.Typer], None]
