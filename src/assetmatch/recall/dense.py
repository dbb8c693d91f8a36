"""Dense vectors of the tables, one shard per business, searched only where the query may look.

Rows are sorted by business, so each business is one contiguous row range and one shard folder:

    dense/shards/<business slug>/vectors.npy     its tables' normalised vectors, in row order
    dense/shards/<business slug>/hnsw.faiss      only for a shard above `recall.hnsw_threshold` rows
    dense/shards/<business slug>/ivfpq.faiss     only for a shard above `recall.ivfpq_threshold` rows

The index type is chosen per shard by its size (`shard_kind`) and recorded in the manifest
(`dense_shards`: kind and parameters):

- flat, up to `recall.hnsw_threshold` rows: exact inner products with numpy (what FAISS IndexFlatIP
  computes);
- hnsw, above it: IndexHNSWFlat (inner product), which holds a copy of the vectors plus its graph;
- ivfpq, above `recall.ivfpq_threshold`: IndexIVFPQ, trained on (a sample of) the shard's own vectors.
  It holds only compressed codes (m bytes per row at 8 bits instead of 4 x dim), so the index of a
  very large business stays small; its candidates (`IVF_REFINE` x k per query, from `nprobe` cells)
  are re-ranked by their exact cosine on the mapped vectors, which keeps recall@10 within 0.01 of
  flat (`tests/unit/recall/test_dense_shards.py`).

A query limited to some businesses therefore reads only their shards: no other business's table can
come back, and its latency does not depend on the other businesses' sizes.

Serving reads a shard lazily: loading the index memory-maps every shard's vectors (`np.load(mmap_mode=
"r")` reads only the header), their pages come in on the first query of that business, and an HNSW or
IVF-PQ shard's index is read on its first query (`faiss.IO_FLAG_MMAP_IFC` where FAISS supports it).
Loading a 100k-table index therefore reads no vectors.

A build reuses a shard of the previous published index when its digest (model, document keys in row
order, index type and parameters) is unchanged: the files are hard-linked (copied across devices)
instead of rebuilt, so a change in one business rebuilds one shard (`assetmatch.recall.shards`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 64  # cells searched per query (at most all of them)
IVF_REFINE = 10  # candidates per wanted hit, re-ranked by their exact cosine
IVF_TRAIN_ROWS = 100_000  # k-means sample: more adds training time, not recall
IVF_POINTS_PER_CENTROID = 39  # FAISS's minimum training points per k-means centroid
IVF_MAX_CODE_BYTES = 48  # PQ sub-quantizers: 384 dims -> 48 codes of 8 dims
IVFPQ_MIN_ROWS = IVF_POINTS_PER_CENTROID * 16  # fewer rows cannot train 4-bit codes: HNSW or flat then
VECTORS_FILE = "vectors.npy"
HNSW_FILE = "hnsw.faiss"
IVFPQ_FILE = "ivfpq.faiss"
INDEX_FILES = {"hnsw": HNSW_FILE, "ivfpq": IVFPQ_FILE}
# how each kind's parameters follow from the shard: part of the digest, so a change rebuilds the shards
_PARAMETER_RULES = {
    "flat": "",
    "hnsw": f"M={HNSW_M},efc={HNSW_EF_CONSTRUCTION}",
    "ivfpq": f"nlist=4sqrt(n)<=n/{IVF_POINTS_PER_CENTROID},m<={IVF_MAX_CODE_BYTES},train={IVF_TRAIN_ROWS}",
}

logger = logging.getLogger(__name__)


class ShardLoadError(LookupError):
    """A dense shard's files are missing or disagree with the manifest."""


def shard_kind(rows: int, hnsw_threshold: int, ivfpq_threshold: int | None = None) -> str:
    """ "flat" (exact) up to `hnsw_threshold` rows, "hnsw" above, "ivfpq" above `ivfpq_threshold`
    (and at least `IVFPQ_MIN_ROWS`, enough to train its codes)."""
    if ivfpq_threshold is not None and rows > ivfpq_threshold and rows >= IVFPQ_MIN_ROWS:
        return "ivfpq"
    return "hnsw" if rows > hnsw_threshold else "flat"


def shard_digest(model_id: str, kind: str, keys: Sequence[str]) -> str:
    """What a shard's files depend on: the encoder, the index type and its parameter rule, and the
    content keys of its documents in row order (a changed, added or removed table changes it)."""
    digest = hashlib.sha256(f"{model_id}\n{kind}\n{_PARAMETER_RULES[kind]}\n".encode())
    for key in keys:
        digest.update(key.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def dense_kind(shards: Iterable[ShardInfo]) -> str:
    """The index type of a set of shards: "flat", "hnsw", "ivfpq", "mixed" (more than one) or "none"."""
    kinds = {info.kind for info in shards}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


@dataclass(frozen=True)
class ShardInfo:
    """One business's shard as the manifest records it."""

    folder: str  # under dense/shards/
    kind: str  # "flat" | "hnsw" | "ivfpq"
    rows: int
    digest: str
    params: dict[str, int] = field(default_factory=dict)  # the FAISS index's parameters ({} when flat)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ivfpq_params(rows: int, dim: int) -> dict[str, int]:
    """IndexIVFPQ parameters for a shard: about 4 sqrt(n) cells (FAISS's rule of thumb), but never
    fewer than 39 training points per cell; the largest number of code bytes up to 48 that divides
    the dimension; 8-bit codes unless the sample is too small to train 256 centroids per code."""
    train = min(rows, IVF_TRAIN_ROWS)
    nlist = max(1, min(round(4 * math.sqrt(rows)), train // IVF_POINTS_PER_CENTROID))
    nbits = max(1, min(8, int(math.log2(max(2, train // IVF_POINTS_PER_CENTROID)))))
    m = max(d for d in range(1, IVF_MAX_CODE_BYTES + 1) if dim % d == 0)
    return {
        "nlist": nlist,
        "m": m,
        "nbits": nbits,
        "nprobe": min(IVF_NPROBE, nlist),
        "refine": IVF_REFINE,
        "train_rows": train,
    }


def write_shard(folder: Path, vectors: np.ndarray, kind: str) -> dict[str, int]:
    """Write one shard: its vectors, plus the FAISS index its kind needs. Returns the index's
    parameters (recorded in the manifest)."""
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    np.save(folder / VECTORS_FILE, vectors)
    dim = vectors.shape[1]
    index: Any
    if kind == "hnsw":
        params = {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(vectors)
    elif kind == "ivfpq":
        params = ivfpq_params(len(vectors), dim)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(
            quantizer, dim, params["nlist"], params["m"], params["nbits"], faiss.METRIC_INNER_PRODUCT
        )
        # a fixed sample: the same shard trains the same index (its digest promises as much)
        rows = np.random.default_rng(0).choice(len(vectors), params["train_rows"], replace=False)
        index.train(vectors[np.sort(rows)])
        index.add(vectors)
    else:
        return {}
    faiss.write_index(index, str(folder / INDEX_FILES[kind]))
    return params


class _Shard:
    """One business's shard: its vectors memory-mapped when the index loads (only the .npy header is
    read; pages come in on the first query), its FAISS index read on the first query that needs it."""

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
        self._missing = False  # the FAISS file could not be read: search the vectors exactly
        self._lock = threading.Lock()

    def index(self) -> Any:
        """The HNSW or IVF-PQ index (memory-mapped where FAISS supports it), or None for an exact
        shard. If its file is gone (an old index folder pruned under a server still holding it), the
        mapped vectors still answer, exactly."""
        if self.info.kind not in INDEX_FILES or self._index is not None or self._missing:
            return self._index
        with self._lock:
            if self._index is None and not self._missing:
                import faiss

                name = INDEX_FILES[self.info.kind]
                path = str(self.folder / name)
                try:
                    try:
                        self._index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
                    except RuntimeError:  # an index type without zero-copy mmap support: read it
                        self._index = faiss.read_index(path)
                except RuntimeError:
                    logger.warning("dense shard %s: %s unreadable, searching it exactly", self.folder, name)
                    self._missing = True
        return self._index

    def search(self, queries: np.ndarray, k: int) -> dict[int, float]:
        """Best rows (global row -> max cosine over the queries), at most k per query."""
        k = min(k, self.info.rows)
        if k <= 0:
            return {}
        index = self.index()
        if index is None:  # exact: a small shard, or a FAISS file that is gone
            return self.exact(np.arange(self.info.rows), queries, k)
        import faiss

        if self.info.kind == "ivfpq":
            # PQ scores are approximate: take refine x k candidates, re-rank them on the exact vectors
            ivf = faiss.SearchParametersIVF()  # type: ignore[attr-defined]  # not in faiss's stubs
            ivf.nprobe = int(self.info.params.get("nprobe", IVF_NPROBE))
            wanted = min(self.info.rows, k * int(self.info.params.get("refine", IVF_REFINE)))
            _, ids = index.search(queries, wanted, params=ivf)
            return self.exact(np.unique(ids[ids >= 0]), queries, k)
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in faiss's stubs
        params.efSearch = max(HNSW_EF_SEARCH, k)
        sims_all, ids_all = index.search(queries, k, params=params)
        best: dict[int, float] = {}
        for ids, sims in zip(ids_all, sims_all):
            for row, sim in zip(ids, sims):
                if row >= 0 and sim > best.get(self.start + int(row), -np.inf):
                    best[self.start + int(row)] = float(sim)
        return best

    def exact(self, rows: np.ndarray, queries: np.ndarray, k: int) -> dict[int, float]:
        """The k best of `rows` (sorted local rows) by their exact cosine, the max over the queries."""
        if not len(rows):
            return {}
        candidates = self.vectors if len(rows) == self.info.rows else self.vectors[rows]
        sims = np.asarray(candidates @ queries.T).max(axis=1)
        top = np.argpartition(-sims, k - 1)[:k] if len(sims) > k else np.arange(len(sims))
        return {self.start + int(rows[r]): float(sims[r]) for r in top}


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

    def search(
        self, queries: np.ndarray, businesses: Sequence[str], k: int, rows: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (row, cosine) over the businesses' shards; several queries score each row by their max.
        rows: only these global rows (a request's scope), scored exactly; None: every row."""
        if k <= 0:
            return []
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        best: dict[int, float] = {}
        for business in sorted(set(businesses)):
            if business in self.shards and self.shards[business].rows:
                shard = self.shard(business)
                if rows is None:
                    best.update(shard.search(queries, k))
                else:  # a scope is a few databases: their exact cosines cost less than a filtered ANN search
                    inside = rows[(rows >= shard.start) & (rows < shard.start + shard.info.rows)]
                    best.update(shard.exact(inside - shard.start, queries, k))
        return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]


class RowVectors:
    """`DenseIndex.vectors`: the library's vectors addressed by global row, read from the shards."""

    def __init__(self, dense: DenseIndex) -> None:
        self._dense = dense

    def __len__(self) -> int:
        return self._dense.rows

    def __getitem__(self, row: int) -> np.ndarray:
        return self._dense.row(int(row))
