"""Dense vectors of the tables in FAISS, searched per business.

Rows are stored sorted by business, so each business is one contiguous row range. How a query that is
limited to some businesses is answered (measured in benchmarks/recall_scale.py):

- the selected rows are few (<= `exact_limit`, default the HNSW threshold): exact inner products on
  those row ranges with numpy, which is what IndexFlatIP computes, minus the other tenants' rows;
- otherwise: the FAISS index (IndexFlatIP below `hnsw_threshold` tables, IndexHNSWFlat above) searched
  for more than k, then filtered to the businesses, widening until k survive.

Either way no other business's table can come back: filtering is by row range, not by trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HNSW_M = 32
HNSW_EF_SEARCH = 128


def build_faiss(vectors: np.ndarray, hnsw_threshold: int) -> tuple[Any, str]:
    """IndexFlatIP for libraries up to `hnsw_threshold` rows, IndexHNSWFlat (inner product) above."""
    import faiss

    dim = vectors.shape[1]
    index: Any
    if len(vectors) > hnsw_threshold:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        kind = "hnsw"
    else:
        index = faiss.IndexFlatIP(dim)
        kind = "flat"
    if len(vectors):
        index.add(vectors)
    return index, kind


class DenseIndex:
    """Normalised vectors (rows sorted by business) plus their FAISS index."""

    def __init__(
        self,
        vectors: np.ndarray,
        index: Any,
        kind: str,
        ranges: dict[str, tuple[int, int]],
        exact_limit: int,
    ) -> None:
        self.vectors = vectors
        self.index = index
        self.kind = kind
        self.ranges = ranges  # business -> [start, end) rows
        self.exact_limit = exact_limit

    def save(self, folder: Path) -> None:
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors)
        faiss.write_index(self.index, str(folder / f"{self.kind}.faiss"))

    @classmethod
    def load(cls, folder: Path, ranges: dict[str, tuple[int, int]], exact_limit: int) -> DenseIndex:
        import faiss

        vectors = np.load(folder / "vectors.npy")
        kind = "hnsw" if (folder / "hnsw.faiss").exists() else "flat"
        index: Any = faiss.read_index(str(folder / f"{kind}.faiss"))
        if kind == "hnsw":
            index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(vectors, index, kind, ranges, exact_limit)

    def _selected(self, businesses: Sequence[str]) -> list[tuple[int, int]]:
        return sorted(self.ranges[b] for b in set(businesses) if b in self.ranges)

    def search(self, queries: np.ndarray, businesses: Sequence[str], k: int) -> list[tuple[int, float]]:
        """Top-k (row, cosine) over the businesses' rows; several queries score each row by their max."""
        spans = self._selected(businesses)
        selected = sum(end - start for start, end in spans)
        if not selected or k <= 0:
            return []
        queries = np.atleast_2d(queries).astype(np.float32, copy=False)
        if selected <= self.exact_limit or self.index.ntotal != len(self.vectors):
            rows = np.concatenate([np.arange(s, e) for s, e in spans]) if len(spans) > 1 else None
            if rows is None:
                start, end = spans[0]
                sims = (self.vectors[start:end] @ queries.T).max(axis=1)
                offset = start
            else:
                sims = (self.vectors[rows] @ queries.T).max(axis=1)
                offset = 0
            top = np.argpartition(-sims, min(k, len(sims)) - 1)[:k] if len(sims) > k else np.arange(len(sims))
            top = top[np.argsort(-sims[top], kind="stable")]
            picked = rows[top] if rows is not None else top + offset
            return [(int(r), float(sims[t])) for r, t in zip(picked, top)]
        return self._search_index(queries, spans, k)

    def _search_index(
        self, queries: np.ndarray, spans: list[tuple[int, int]], k: int
    ) -> list[tuple[int, float]]:
        starts = np.array([s for s, _ in spans])
        ends = np.array([e for _, e in spans])
        total = self.index.ntotal
        fetch = min(total, max(k * 4, int(k * total / max(1, int((ends - starts).sum())))))
        while True:
            sims, ids = self.index.search(queries, fetch)
            best: dict[int, float] = {}
            for row_ids, row_sims in zip(ids, sims):
                for row, sim in zip(row_ids, row_sims):
                    if row < 0:
                        continue
                    pos = np.searchsorted(starts, row, side="right") - 1
                    if pos >= 0 and row < ends[pos] and sim > best.get(int(row), -np.inf):
                        best[int(row)] = float(sim)
            if len(best) >= k or fetch >= total:
                return sorted(best.items(), key=lambda item: -item[1])[:k]
            fetch = min(total, fetch * 4)
