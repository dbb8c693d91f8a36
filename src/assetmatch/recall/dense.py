"""Dense vectors of the tables, one shard per business, searched only where the query may look.

Rows are sorted by business, so each business is one contiguous row range and one shard folder:

    dense/shards/<business slug>/vectors.npy     its tables' normalised vectors, in row order
    dense/shards/<business slug>/hnsw.faiss      only for a shard above `recall.hnsw_threshold` rows

The index type is chosen per shard by its size (`shard_kind`) and recorded in the manifest
(`dense_shards`): a shard up to the threshold is searched exactly (inner products with numpy, what
FAISS IndexFlatIP computes), a larger one through HNSW (IndexHNSWFlat, inner product). A query limited
to some businesses therefore reads only their shards: no other business's table can come back, and
its latency does not depend on the other businesses' sizes.

Serving reads a shard lazily: loading the index memory-maps every shard's vectors (`np.load(mmap_mode=
"r")` reads only the header), their pages come in on the first query of that business, and an HNSW
shard's index is read on its first query (`faiss.IO_FLAG_MMAP_IFC`: its vectors stay mapped). Loading
a 100k-table index therefore reads no vectors.

A build reuses a shard of the previous published index when its digest (model, document keys in row
order, index type and parameters) is unchanged: the files are hard-linked (copied across devices)
instead of rebuilt, so a change in one business rebuilds one shard (`assetmatch.recall.shards`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
VECTORS_FILE = "vectors.npy"
HNSW_FILE = "hnsw.faiss"

logger = logging.getLogger(__name__)


class ShardLoadError(LookupError):
    """A dense shard's files are missing or disagree with the manifest."""


def shard_kind(rows: int, hnsw_threshold: int) -> str:
    """ "flat" (exact) up to `hnsw_threshold` rows, "hnsw" above."""
    return "hnsw" if rows > hnsw_threshold else "flat"


def shard_digest(model_id: str, kind: str, keys: Sequence[str]) -> str:
    """What a shard's files depend on: the encoder, the index type and parameters, and the content
    keys of its documents in row order (a changed, added or removed table changes it)."""
    digest = hashlib.sha256(f"{model_id}\n{kind}\nM={HNSW_M},efc={HNSW_EF_CONSTRUCTION}\n".encode())
    for key in keys:
        digest.update(key.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def dense_kind(shards: Iterable[ShardInfo]) -> str:
    """The index type of a set of shards: "flat", "hnsw", "mixed" (some of each) or "none" (no shard)."""
    kinds = {info.kind for info in shards}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


@dataclass(frozen=True)
class ShardInfo:
    """One business's shard as the manifest records it."""

    folder: str  # under dense/shards/
    kind: str  # "flat" | "hnsw"
    rows: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_faiss(vectors: np.ndarray, hnsw_threshold: int) -> tuple[Any, str]:
    """IndexFlatIP for up to `hnsw_threshold` rows, IndexHNSWFlat (inner product) above."""
    import faiss

    dim = vectors.shape[1]
    index: Any
    kind = shard_kind(len(vectors), hnsw_threshold)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index, kind


def write_shard(folder: Path, vectors: np.ndarray, kind: str) -> None:
    """Write one shard: its vectors, plus the HNSW graph when `kind` is "hnsw"."""
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
    if kind == "hnsw":
        index, _ = build_faiss(vectors, hnsw_threshold=0)
        faiss.write_index(index, str(folder / HNSW_FILE))


class _Shard:
    """One business's shard: its vectors memory-mapped when the index loads (only the .npy header is
    read; pages come in on the first query), its HNSW index read on the first query that needs it."""

    def __init__(self, folder: Path, info: ShardInfo, start: int) -> None:
        self.folder = folder
        self.info = info
        self.start = start
        try:
            self.vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ShardLoadError(f"dense shard {folder} is unreadable: {exc}") from exc
        if len(self.vectors) != info.rows:
            raise ShardLoadError(
                f"dense shard {folder} holds {len(self.vectors)} rows, manifest says {info.rows}"
            )
        self._index: Any = None
        self._missing = False  # the HNSW file could not be read: search the vectors exactly
        self._lock = threading.Lock()

    def index(self) -> Any:
        """The HNSW index (memory-mapped where FAISS supports it), or None for an exact shard. If its
        file is gone (an old index folder pruned under a server still holding it), the mapped vectors
        still answer, exactly."""
        if self.info.kind != "hnsw" or self._index is not None or self._missing:
            return self._index
        with self._lock:
            if self._index is None and not self._missing:
                import faiss

                path = str(self.folder / HNSW_FILE)
                index: Any = None
                try:
                    try:
                        index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
                    except RuntimeError:  # an index type without zero-copy mmap support: read it
                        index = faiss.read_index(path)
                except RuntimeError:
                    logger.warning(
                        "dense shard %s: %s unreadable, searching it exactly", self.folder, HNSW_FILE
                    )
                    self._missing = True
                else:
                    index.hnsw.efSearch = HNSW_EF_SEARCH
                self._index = index
        return self._index

    def search(self, queries: np.ndarray, k: int) -> dict[int, float]:
        """Best rows (global row -> max cosine over the queries), at most k per query."""
        k = min(k, self.info.rows)
        if k <= 0:
            return {}
        best: dict[int, float] = {}
        index = self.index()
        if index is None:  # exact: a small shard, or an HNSW file that is gone
            sims = np.asarray(self.vectors @ queries.T).max(axis=1)
            top = np.argpartition(-sims, k - 1)[:k] if len(sims) > k else np.arange(len(sims))
            return {self.start + int(r): float(sims[r]) for r in top}
        import faiss

        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in faiss's stubs
        params.efSearch = max(HNSW_EF_SEARCH, k)
        sims_all, ids_all = index.search(queries, k, params=params)
        for ids, sims in zip(ids_all, sims_all):
            for row, sim in zip(ids, sims):
                if row >= 0 and sim > best.get(self.start + int(row), -np.inf):
                    best[self.start + int(row)] = float(sim)
        return best


class DenseIndex:
    """The dense shards of one published index: mapped at load, paged in and (HNSW) read on first use."""

    def __init__(
        self,
        folder: Path,
        shards: Mapping[str, ShardInfo],
        ranges: Mapping[str, tuple[int, int]],
    ) -> None:
        self.folder = folder
        self.shards = dict(shards)
        self.ranges = dict(ranges)  # business -> [start, end) rows
        for business, info in self.shards.items():
            start, end = self.ranges.get(business, (0, 0))
            if end - start != info.rows:
                raise ShardLoadError(
                    f"dense shard of {business!r} has {info.rows} rows, the assets list {end - start}"
                )
        # mapping reads only each .npy header; holding the maps keeps the files readable even if the
        # folder is pruned while this index still serves (unlinked files stay mapped)
        self._shards = {
            b: _Shard(folder / "shards" / info.folder, info, self.ranges[b][0])
            for b, info in self.shards.items()
        }
        self._used: set[str] = set()
        order = sorted((start, b) for b, (start, _) in self.ranges.items() if b in self.shards)
        self._starts = [s for s, _ in order]
        self._order = [b for _, b in order]
        self.vectors = RowVectors(self)
        self.rows = sum(info.rows for info in self.shards.values())

    @property
    def kind(self) -> str:
        """ "flat", "hnsw", "mixed" (some of each) or "none" (no shard)."""
        return dense_kind(self.shards.values())

    @property
    def loaded(self) -> list[str]:
        """Businesses whose shard has been read so far (searched, or a row of it asked for)."""
        return sorted(self._used)

    def shard(self, business: str) -> _Shard:
        self._used.add(business)
        return self._shards[business]

    def row(self, row: int) -> np.ndarray:
        """The vector of one global row (loads its shard)."""
        pos = bisect_right(self._starts, row) - 1
        if pos < 0 or row < 0:
            raise IndexError(row)
        shard = self.shard(self._order[pos])
        local = row - shard.start
        if local >= shard.info.rows:
            raise IndexError(row)
        return np.asarray(shard.vectors[local])

    def search(self, queries: np.ndarray, businesses: Sequence[str], k: int) -> list[tuple[int, float]]:
        """Top-k (row, cosine) over the businesses' shards; several queries score each row by their max."""
        if k <= 0:
            return []
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        best: dict[int, float] = {}
        for business in sorted(set(businesses)):
            if business in self.shards and self.shards[business].rows:
                best.update(self.shard(business).search(queries, k))
        return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]


class RowVectors:
    """`DenseIndex.vectors`: the library's vectors addressed by global row, read from the shards."""

    def __init__(self, dense: DenseIndex) -> None:
        self._dense = dense

    def __len__(self) -> int:
        return self._dense.rows

    def __getitem__(self, row: int) -> np.ndarray:
        return self._dense.row(int(row))
