"""`--update-golden`: rewrite the golden files of tests/unit/sources/golden/ from what the sources yield now."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/unit/sources/golden/*.json from the current output (review the diff, then commit).",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
