"""The `assetmatch` command line. Each stage registers its commands from its own module; heavy
libraries (torch, feast, prefect, great_expectations) are imported inside the commands only, so
`assetmatch --help` stays fast. The command modules also import the library's stage modules inside
the command that runs them (the one exception to module-level imports, `make quality`'s contract
still checks their direction): together those pull pandas, pyarrow, deltalake and fastapi, which
would double the start-up time of every command."""

from __future__ import annotations

from pathlib import Path

import typer

from assetmatch.cli import common

app = typer.Typer(
    name="assetmatch",
    help="Match analysts' requirements to the warehouse tables that answer them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Config file (default: $ASSETMATCH_CONFIG or ./assetmatch.yaml).",
        envvar=None,
    ),
) -> None:
    common.set_config_path(config)


def _register_all() -> None:
    from assetmatch.cli import demo, features, ingest, matching, models, ops, serving

    for module in (ingest, matching, features, models, serving, demo, ops):
        module.register(app)


_register_all()
