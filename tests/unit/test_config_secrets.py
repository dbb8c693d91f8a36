"""One secret mechanism: `${ENV}` resolved for every secret-bearing setting, URL passwords with
special characters kept whole, and secret values masked in errors and log lines."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from assetmatch.config import ConfigError, SourceSpec, expand_env, load_settings, scrub

NASTY = "p@ss:w/rd#1?x%"  # every character that moves a URL's parts
DIGEST = "a" * 64


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "assetmatch.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (
            {"lake": {"uri": "s3://b/lake", "storage_options": {"AWS_SECRET_ACCESS_KEY": "${TEST_SECRET}"}}},
            lambda s: s.lake.storage_options["AWS_SECRET_ACCESS_KEY"].get_secret_value(),
        ),
        (
            {"training": {"llm": {"api_key": "${TEST_SECRET}"}}},
            lambda s: s.training.llm.api_key.get_secret_value(),
        ),
        (
            {"serving": {"redis_cache_url": "redis://:${TEST_SECRET}@cache:6379/0"}},
            lambda s: make_url(s.serving.redis_cache_url.get_secret_value()).password,
        ),
        (
            {"feast": {"redis_connection": "cache:6379,password=${TEST_SECRET}"}},
            lambda s: s.feast.redis_connection.get_secret_value().split("password=", 1)[1],
        ),
        (
            {"mlflow": {"tracking_uri": "postgresql://mlflow:${TEST_SECRET}@db:5432/mlflow"}},
            lambda s: make_url(s.mlflow.tracking_uri).password,
        ),
    ],
    ids=[
        "lake.storage_options",
        "training.llm.api_key",
        "serving.redis_cache_url",
        "feast.redis_connection",
        "mlflow.tracking_uri",
    ],
)
def test_every_secret_setting_resolves_env_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: dict[str, Any], read: Any
) -> None:
    monkeypatch.setenv("TEST_SECRET", NASTY)
    settings = load_settings(write(tmp_path, data))
    assert read(settings) == NASTY  # in a URL: percent-encoded, so the parsed password is whole
    assert NASTY not in repr(settings) and NASTY not in str(settings.model_dump())


def test_api_key_digests_may_be_env_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY_DIGEST", DIGEST)
    settings = load_settings(write(tmp_path, {"serving": {"api_keys": {"${TEST_KEY_DIGEST}": ["moba"]}}}))
    assert settings.serving.api_keys == {DIGEST: ["moba"]}


def test_env_overrides_resolve_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SECRET", NASTY)
    monkeypatch.setenv("ASSETMATCH_SERVING__REDIS_CACHE_URL", "redis://:${TEST_SECRET}@cache:6379/0")
    settings = load_settings(write(tmp_path, {}))
    assert settings.serving.redis_cache_url is not None
    assert make_url(settings.serving.redis_cache_url.get_secret_value()).host == "cache"


def test_a_missing_variable_names_the_setting_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_UNSET_SECRET", raising=False)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, {"training": {"llm": {"api_key": "${TEST_UNSET_SECRET}"}}}))
    assert "training.llm.api_key" in str(err.value) and "TEST_UNSET_SECRET" in str(err.value)


def test_url_password_with_special_characters_stays_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SECRET", NASTY)
    url = make_url(expand_env("postgresql+psycopg://reader:${TEST_SECRET}@db:5432/dw"))
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "reader",
        NASTY,
        "db",
        5432,
        "dw",
    )
    # a whole-URL reference is taken as written (it is already a URL)
    monkeypatch.setenv("TEST_URL", "postgresql://u:x@db/dw")
    assert expand_env("${TEST_URL}") == "postgresql://u:x@db/dw"


def test_log_lines_and_tracebacks_mask_resolved_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEST_SECRET", NASTY)
    load_settings(write(tmp_path, {"training": {"llm": {"api_key": "${TEST_SECRET}"}}}))
    log = logging.getLogger("assetmatch.test.secrets")
    with caplog.at_level(logging.INFO):
        log.info("connecting with %s", NASTY)
        try:
            raise RuntimeError(f"refused: token {NASTY}")
        except RuntimeError:
            log.exception("call failed")
    assert NASTY not in caplog.text
    assert caplog.text.count("***") >= 2
    assert scrub(f"a {NASTY} b") == "a *** b"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens


def test_a_connection_error_does_not_leak_any_part_of_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the unencoded '@' made SQLAlchemy read 'ss:w/rd...@127.0.0.1' as the host, and the
    driver's error quoted it."""
    from assetmatch.sources.sql import SourceConnectionError, SqlSource

    monkeypatch.setenv("TEST_SECRET", NASTY)
    url = f"postgresql+psycopg://reader:${{TEST_SECRET}}@127.0.0.1:{_closed_port()}/dw"
    spec = SourceSpec(name="dw", type="sql", business="b", options={"url": url, "connect_retries": 1})
    source = SqlSource.create(spec)
    assert isinstance(source, SqlSource)
    with pytest.raises(SourceConnectionError) as err:
        source._connect()
    message = str(err.value)
    assert "127.0.0.1" in message
    for fragment in ("p@ss", "ss:w", "w/rd", "rd#1", NASTY):
        assert fragment not in message, message


def test_a_malformed_complex_env_override_is_one_clear_line(tmp_path: Path) -> None:
    from assetmatch.cli import app

    config = write(tmp_path, {})
    env = {"ASSETMATCH_SERVING__API_KEYS": '{"abc": ['}
    result = CliRunner().invoke(app, ["--config", str(config), "serve"], env=env)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "ASSETMATCH_SERVING__API_KEYS" in output and "not valid JSON" in output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3


def test_cli_error_lines_mask_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from assetmatch.cli import common

    monkeypatch.setenv("TEST_SECRET", NASTY)
    load_settings(write(tmp_path, {"training": {"llm": {"api_key": "${TEST_SECRET}"}}}))
    monkeypatch.setattr(common, "err_console", common.Console(stderr=True, width=200))
    with pytest.raises(typer.Exit), common.friendly_errors(OSError):
        raise OSError(f"endpoint refused token [{NASTY}]")
    err = capsys.readouterr().err
    assert "endpoint refused token [***]" in err and NASTY not in err
