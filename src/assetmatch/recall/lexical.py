"""BM25 over pre-tokenized documents (bm25s), with weighted query tokens.

bm25s scores a plain token list; a cross-lingual query needs weights (each Chinese word's glosses share
a weight of 1), so the score is the weighted sum of per-token score vectors from `get_scores`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class Bm25Index:
    """A BM25 index over `n` documents; scores come back as a dense array of length n."""

    def __init__(self, retriever: Any, num_docs: int) -> None:
        self.retriever = retriever
        self.num_docs = num_docs
        self.vocab: dict[str, int] = dict(retriever.vocab_dict or {})

    @classmethod
    def build(cls, documents: Sequence[Sequence[str]]) -> Bm25Index:
        import bm25s

        retriever = bm25s.BM25()  # Lucene BM25, k1=1.5, b=0.75
        # bm25s cannot index an empty corpus or an all-empty one; a placeholder token keeps shapes right
        docs = [list(d) if d else ["\u2205"] for d in documents] or [["\u2205"]]
        retriever.index(docs, show_progress=False)
        return cls(retriever, len(documents))

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, num_docs: int) -> Bm25Index:
        import bm25s

        retriever = bm25s.BM25.load(str(folder), show_progress=False, verbosity=0)
        return cls(retriever, num_docs)

    def token_scores(self, weights: Mapping[str, float]) -> dict[str, np.ndarray]:
        """Per known query token, its (weighted) score for every document."""
        out: dict[str, np.ndarray] = {}
        for token, weight in weights.items():
            if weight > 0 and token in self.vocab:
                out[token] = weight * self.retriever.get_scores([token])[: self.num_docs]
        return out

    def scores(self, weights: Mapping[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Total score per document and the per-token parts (to explain which terms matched)."""
        parts = self.token_scores(weights)
        total = np.zeros(self.num_docs, dtype=np.float32)
        for vector in parts.values():
            total += vector
        return total, parts


def count_weights(tokens: Sequence[str]) -> dict[str, float]:
    """Query tokens as weights: a token repeated in the query counts once per occurrence."""
    weights: dict[str, float] = {}
    for token in tokens:
        weights[token] = weights.get(token, 0.0) + 1.0
    return weights
