"""Config: YAML + environment overrides, errors that name the key, secrets never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from assetmatch.config import ConfigError, expand_env, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "assetmatch.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.lake.uri == ".assetmatch/lake"
    assert settings.sources == []
    assert "dense" in settings.recall.paths


def test_yaml_values_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
lake: {uri: /data/lake}
businesses: [{name: moba}, {name: farm}]
sources:
  - {name: wh, type: sql, business: moba, options: {url: "sqlite:///x.db"}}
""",
    )
    monkeypatch.setenv("ASSETMATCH_LAKE__URI", "s3://bucket/lake")
    settings = load_settings(path)
    assert settings.lake.uri == "s3://bucket/lake"
    assert settings.business_names() == ["moba", "farm"]
    assert settings.source("wh").type == "sql"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "lake: {uri: x, urii: y}\n")
    with pytest.raises(ConfigError, match=r"lake\.urii: unknown key"):
        load_settings(path)


def test_bad_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "validation: {max_bad_fraction: 3}\n")
    with pytest.raises(ConfigError, match=r"validation\.max_bad_fraction"):
        load_settings(path)


def test_ranker_overrides_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "training: {ranker: {lerning_rate: 0.001}}\n")
    with pytest.raises(ConfigError, match=r"training\.ranker\.lerning_rate: unknown field.*'learning_rate'"):
        load_settings(path)
    path = write(tmp_path, "training: {ranker: {learning_rate: 5}}\n")
    with pytest.raises(ConfigError, match=r"training\.ranker\.learning_rate must be in \(0, 1\)"):
        load_settings(path)
    path = write(tmp_path, "training: {ranker: {lora_r: eight}}\n")
    with pytest.raises(ConfigError, match=r"training\.ranker\.lora_r: expected int"):
        load_settings(path)
    path = write(tmp_path, "training: {ranker: {eval_at_start: 0}}\n")
    with pytest.raises(ConfigError, match=r"training\.ranker\.eval_at_start: expected bool"):
        load_settings(path)
    path = write(
        tmp_path,
        "training: {ranker: {learning_rate: 0.0005, target_modules: [query], max_steps: 3, eval_at_start: false}}\n",
    )
    assert load_settings(path).training.ranker["target_modules"] == ["query"]
    assert load_settings(path).training.ranker["eval_at_start"] is False


def test_shared_ranker_overrides_are_checked_like_the_ranker_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "training: {shared_ranker: {max_stpes: 50}}\n")
    with pytest.raises(ConfigError, match=r"training\.shared_ranker\.max_stpes: unknown field.*'max_steps'"):
        load_settings(path)
    path = write(tmp_path, "training: {ranker: {epochs: 1}, shared_ranker: {max_steps: 50}}\n")
    training = load_settings(path).training
    assert training.ranker == {"epochs": 1} and training.shared_ranker == {"max_steps": 50}


def test_source_referring_to_unknown_business(tmp_path: Path) -> None:
    path = write(tmp_path, "businesses: [{name: moba}]\nsources: [{name: s, type: sql, business: nope}]\n")
    with pytest.raises(ConfigError, match=r"sources\.0\.business: unknown business 'nope'"):
        load_settings(path)


def test_duplicate_source_names(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: [{name: s, type: sql}, {name: s, type: dbt}]\n")
    with pytest.raises(ConfigError, match="duplicate source name"):
        load_settings(path)


def test_missing_config_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_secrets_are_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_PASSWORD", "hunter2")
    path = write(tmp_path, "feast: {online_store: redis, redis_connection: 'redis:6379,password=hunter2'}\n")
    settings = load_settings(path)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    # a bad value next to a secret: the error names the key, not the secret
    bad = write(tmp_path, "feast: {online_store: redis, redis_connection: 'hunter2', enabled: maybe}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    assert "feast.enabled" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert expand_env("postgresql://u:${PG_PASSWORD}@h/db") == "postgresql://u:hunter2@h/db"


def test_missing_env_reference_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    with pytest.raises(ConfigError, match="NOPE_SECRET"):
        expand_env("x${NOPE_SECRET}")


def test_yaml_path_does_not_leak_between_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parallel flow tasks load different configs at once; neither may see the other's file."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSETMATCH_CONFIG", raising=False)
    paths = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        paths.append(write(folder, f"lake: {{uri: {name}}}\n"))
    with ThreadPoolExecutor(4) as pool:
        uris = list(pool.map(lambda p: load_settings(p).lake.uri, paths * 50))
    assert uris == ["a", "b"] * 50
    assert load_settings().lake.uri == ".assetmatch/lake"  # nothing left behind
