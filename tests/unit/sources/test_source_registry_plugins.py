"""A source registered through an entry point by another distribution is discovered and used."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from assetmatch.config import ConfigError, SourceSpec
from assetmatch.sources import registry

PLUGIN = '''
"""A third-party source: yields one table per configured name."""
from collections.abc import Iterator

from pydantic import Field

from assetmatch.models import TableAsset
from assetmatch.sources.base import Source, SourceConfig


class ListConfig(SourceConfig):
    tables: list[str] = Field(description="Table names to report.")


class ListSource(Source[ListConfig]):
    config_class = ListConfig

    def iter_assets(self) -> Iterator[TableAsset]:
        for name in self.config.tables:
            self.report.count("tables")
            yield TableAsset(business=self.resolve_business() or "", source=self.name, name=name)


class NotASource:
    pass
'''


@pytest.fixture
def plugin_dist(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Installs a tiny distribution (module + dist-info with entry points) on sys.path."""
    module = f"am_plugin_{uuid.uuid4().hex[:8]}"
    key, bad_key = f"list_{module}", f"bad_{module}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist = tmp_path / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        f"[assetmatch.sources]\n{key} = {module}:ListSource\n{bad_key} = {module}:NotASource\n",
        encoding="utf-8",
    )
    sys.path.insert(0, str(tmp_path))
    registry.clear_cache()
    try:
        yield key, bad_key
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
        registry.clear_cache()


def test_entry_point_plugin_is_discovered_and_used(plugin_dist: tuple[str, str]) -> None:
    key, _ = plugin_dist
    assert key in registry.available()
    cls = registry.get(key)
    assert cls.__name__ == "ListSource"
    spec = SourceSpec(name="mine", type=key, business="game1", options={"tables": ["a", "b"]})
    source = registry.create(spec)
    assets = list(source.iter_assets())
    assert [a.asset_id for a in assets] == ["game1.a", "game1.b"]
    assert source.report.counts == {"tables": 2}
    with pytest.raises(ConfigError, match=r"options\.colour: unknown key"):
        registry.create(SourceSpec(name="mine", type=key, options={"tables": [], "colour": "red"}))


def test_registered_class_that_is_not_a_source_is_rejected(plugin_dist: tuple[str, str]) -> None:
    _, bad_key = plugin_dist
    with pytest.raises(ConfigError, match="is not a concrete assetmatch Source subclass"):
        registry.get(bad_key)


def test_builtin_sources_are_registered() -> None:
    registry.clear_cache()
    assert {"sql", "dbt", "catalog_file", "query_log", "requirements", "glossary"} <= set(
        registry.available()
    )
    for key in ("sql", "dbt", "catalog_file", "query_log", "requirements", "glossary"):
        config_class = registry.get(key).config_class
        assert config_class.model_config.get("extra") == "forbid"
        undocumented = [n for n, f in config_class.model_fields.items() if not f.description]
        assert undocumented == [], f"{key}: options without a description: {undocumented}"
