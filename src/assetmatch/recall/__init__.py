"""Multi-path recall: lexical (BM25), dense (MiniLM + FAISS), glossary, usage and join-graph paths over
versioned, atomically published indexes. Entry point: `assetmatch.recall.index.IndexSet`.

Chinese requirements are glossed with CC-CEDICT (CC BY-SA 4.0, see NOTICE and
`assetmatch.recall.tokenize`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assetmatch.recall.index import IndexSet

__all__ = ["IndexSet"]


def __getattr__(name: str) -> Any:
    # lazy: importing assetmatch.recall must not pull numpy/scipy into `assetmatch --help`
    if name == "IndexSet":
        from assetmatch.recall.index import IndexSet

        return IndexSet
    raise AttributeError(name)
