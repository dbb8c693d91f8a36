"""Shared fixtures: per-test PostgreSQL / MariaDB databases, Redis, temp lakes, offline env.

Service-backed fixtures skip with a reason when the service is absent; with
ASSETMATCH_REQUIRE_SERVICES=1 (set by CI) they fail instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_HOST, PG_PORT = os.environ.get("ASSETMATCH_TEST_PG_HOST", "127.0.0.1"), 5432
MY_HOST, MY_PORT = os.environ.get("ASSETMATCH_TEST_MYSQL_HOST", "127.0.0.1"), 3306
REDIS_HOST, REDIS_PORT = os.environ.get("ASSETMATCH_TEST_REDIS_HOST", "127.0.0.1"), 6379
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO_ROOT.parent / "shared" / "benchmarks"


def services_required() -> bool:
    return os.environ.get("ASSETMATCH_REQUIRE_SERVICES", "") not in ("", "0", "false")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if services_required():
        pytest.fail(f"{message} (ASSETMATCH_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def require_shared_benchmarks() -> Path:
    if (SHARED_BENCHMARKS / "spider" / "assets.jsonl.gz").exists():
        return SHARED_BENCHMARKS
    if services_required():
        pytest.fail(f"benchmark data missing at {SHARED_BENCHMARKS}")
    pytest.skip(f"benchmark data missing at {SHARED_BENCHMARKS}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database owned by this test; dropped afterwards."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    import sqlalchemy as sa

    name = f"am_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB database owned by this test; dropped afterwards."""
    require_service("MariaDB", MY_HOST, MY_PORT)
    import sqlalchemy as sa

    name = f"am_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"mysql+pymysql://root@{MY_HOST}:{MY_PORT}/", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield f"mysql+pymysql://root@{MY_HOST}:{MY_PORT}/{name}?charset=utf8mb4"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"{REDIS_HOST}:{REDIS_PORT}"


@pytest.fixture
def lake_uri(tmp_path: Path) -> str:
    return str(tmp_path / "lake")


@pytest.fixture
def shared_benchmarks() -> Path:
    return require_shared_benchmarks()
