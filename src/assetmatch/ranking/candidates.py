"""A small per-business BM25 candidate function, so training and evaluation do not depend on the
recall indexes being built (the Matcher's multi-path recall is the production candidate source).

`Bm25Candidates(assets)(business, text, k)` returns asset ids of that business, best first.
Tokens are `ranking.prompt.terms` (words, 5-letter prefixes, Chinese bigrams) of the table name,
comment and columns. Tables of other businesses are never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assetmatch.models import TableAsset
from assetmatch.ranking.prompt import column_text, header_text, terms


def _tokens(asset: TableAsset) -> list[str]:
    text = header_text(asset) + " " + " ".join(column_text(c) for c in asset.columns)
    return sorted(terms(text)) or ["_empty_"]


class Bm25Candidates:
    """candidates(business, text, k) over an in-memory BM25 index per business (bm25s)."""

    def __init__(self, assets: Sequence[TableAsset]) -> None:
        import bm25s

        self._ids: dict[str, list[str]] = {}
        self._index: dict[str, Any] = {}
        by_business: dict[str, list[TableAsset]] = {}
        for a in sorted(assets, key=lambda a: a.asset_id):
            by_business.setdefault(a.business, []).append(a)
        for business, items in by_business.items():
            retriever = bm25s.BM25()
            retriever.index([_tokens(a) for a in items], show_progress=False)
            self._index[business] = retriever
            self._ids[business] = [a.asset_id for a in items]

    def __call__(self, business: str, text: str, k: int) -> list[str]:
        ids = self._ids.get(business)
        if not ids:
            return []
        query = sorted(terms(text)) or ["_empty_"]
        k = min(k, len(ids))
        docs, scores = self._index[business].retrieve([query], k=k, show_progress=False)
        ranked = [(float(s), ids[int(d)]) for d, s in zip(docs[0], scores[0])]
        # ties (e.g. score 0) in asset-id order so the result never depends on the index's internals
        ranked.sort(key=lambda t: (-t[0], t[1]))
        return [asset_id for _, asset_id in ranked]
