"""The recall paths registry: one implementation per query path name, names defined once."""

from __future__ import annotations

import pytest

from assetmatch.config import ALL_RECALL_PATHS
from assetmatch.recall.paths import QUERY_PATHS, Query, RecallPath, register
from assetmatch.types import PATHS, Hit


def test_every_query_path_name_has_one_implementation() -> None:
    assert tuple(QUERY_PATHS) == tuple(p for p in PATHS if p != "graph")
    assert ALL_RECALL_PATHS == PATHS
    for name, path in QUERY_PATHS.items():
        assert isinstance(path, RecallPath) and path.name == name


def test_a_path_outside_the_names_is_refused() -> None:
    class Elsewhere:
        name = "elsewhere"
        uses_vectors = False

        def search(self, index: object, query: Query, k: int) -> list[Hit]:
            return []

    with pytest.raises(ValueError, match="elsewhere"):
        register(Elsewhere())  # type: ignore[arg-type]
    assert "elsewhere" not in QUERY_PATHS
