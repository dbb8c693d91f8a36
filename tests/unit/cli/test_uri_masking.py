"""The eval command prints the MLflow tracking URI it logged to: never with its password."""

from __future__ import annotations

import pytest

from assetmatch.cli.matching import _without_password


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://mlflow:s3cr:et@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("http://user:pw@tracking:5000", "http://user:***@tracking:5000"),
        ("sqlite:///tmp/mlflow.db", "sqlite:///tmp/mlflow.db"),
        ("./mlruns", "./mlruns"),
    ],
)
def test_the_tracking_uri_is_shown_without_its_password(uri: str, shown: str) -> None:
    assert _without_password(uri) == shown
