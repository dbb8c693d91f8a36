"""Integration fixtures shared across files (add yours here)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect API (SQLite in a temp PREFECT_HOME) for the whole session: starting one
    costs seconds, so every flow test shares it. Request it in tests that run flows."""
    home = tmp_path_factory.mktemp("prefect-home")
    previous = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = previous
