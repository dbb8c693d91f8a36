"""Entry-point registry of source plugins (group `assetmatch.sources`), loaded lazily."""

from __future__ import annotations

import inspect
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from assetmatch.config import ConfigError, SourceSpec
from assetmatch.sources.base import Source

GROUP = "assetmatch.sources"


@cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Plugin keys that are installed (their modules are not imported)."""
    return sorted(_entry_points())


def get(kind: str) -> type[Source[Any]]:
    """Load the plugin class for `kind`; clear errors for unknown, broken or wrong plugins."""
    eps = _entry_points()
    if kind not in eps:
        raise ConfigError(
            f"source type {kind!r} is not installed (available: {', '.join(available()) or 'none'})"
        )
    try:
        cls = eps[kind].load()
    except ImportError as exc:
        raise ConfigError(
            f"source type {kind!r} could not be imported ({exc}); try `pip install 'assetmatch[{kind}]'`"
        ) from exc
    if not (inspect.isclass(cls) and issubclass(cls, Source)) or inspect.isabstract(cls):
        raise ConfigError(f"entry point {kind!r} -> {cls!r} is not a concrete assetmatch Source subclass")
    return cls


def create(spec: SourceSpec) -> Source[Any]:
    return get(spec.type).create(spec)


def clear_cache() -> None:
    _entry_points.cache_clear()
