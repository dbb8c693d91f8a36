"""The join graph of the library and personalized PageRank over it (the "graph" recall path).

Nodes are tables; edges are foreign keys (weight 1) and co-usage: tables read together by one logged
query or one past (train) requirement (weight log(1 + times seen together)). Personalized PageRank from
the seed tables of a requirement reaches bridge and dimension tables the requirement never names.
PageRank is a scipy sparse power iteration (networkx's would rebuild Python dicts on every query).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

FK_WEIGHT = 1.0
DAMPING = 0.85  # probability of following an edge; 1 - DAMPING jumps back to the seeds
MAX_ITER = 30
TOLERANCE = 1e-6


class JoinGraph:
    """Symmetric weighted adjacency over table rows, with edge kinds kept for explanations."""

    def __init__(self, adjacency: sparse.csr_matrix, kinds: dict[tuple[int, int], str]) -> None:
        self.adjacency = adjacency
        self.kinds = kinds  # (row, row) with row < row -> "fk" | "co-usage" | "fk+co-usage"
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
        # column-stochastic transition: mass at j moves to i with weight w_ij / deg(j)
        self.transition = (adjacency @ sparse.diags(inverse)).tocsr()
        self.dangling = degree == 0

    @property
    def num_edges(self) -> int:
        return len(self.kinds)

    @classmethod
    def build(
        cls,
        size: int,
        fk_pairs: Iterable[tuple[int, int]],
        co_usage_sets: Iterable[Sequence[int]],
    ) -> JoinGraph:
        weights: dict[tuple[int, int], float] = defaultdict(float)
        kinds: dict[tuple[int, int], str] = {}
        for a, b in fk_pairs:
            if a == b:
                continue
            key = (min(a, b), max(a, b))
            weights[key] = max(weights[key], FK_WEIGHT)
            kinds[key] = "fk"
        together: dict[tuple[int, int], int] = defaultdict(int)
        for rows in co_usage_sets:
            for a, b in itertools.combinations(sorted(set(rows)), 2):
                together[(a, b)] += 1
        for key, count in together.items():
            weights[key] += math.log1p(count)
            kinds[key] = "fk+co-usage" if kinds.get(key) == "fk" else "co-usage"
        if weights:
            rows_a, rows_b = zip(*weights.keys())
            values = list(weights.values())
            upper = sparse.coo_matrix((values, (rows_a, rows_b)), shape=(size, size))
            adjacency = (upper + upper.T).tocsr()
        else:
            adjacency = sparse.csr_matrix((size, size))
        return cls(adjacency.astype(np.float64), kinds)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        sparse.save_npz(folder / "adjacency.npz", self.adjacency)
        pairs = np.array(list(self.kinds.keys()), dtype=np.int64).reshape(-1, 2)
        codes = np.array(
            [("fk", "co-usage", "fk+co-usage").index(v) for v in self.kinds.values()], dtype=np.int8
        )
        np.savez(folder / "edge_kinds.npz", pairs=pairs, codes=codes)

    @classmethod
    def load(cls, folder: Path) -> JoinGraph:
        adjacency = sparse.load_npz(folder / "adjacency.npz").tocsr()
        data = np.load(folder / "edge_kinds.npz")
        names = ("fk", "co-usage", "fk+co-usage")
        kinds = {(int(a), int(b)): names[int(c)] for (a, b), c in zip(data["pairs"], data["codes"])}
        return cls(adjacency, kinds)

    def without_co_usage(self, rows: Collection[int]) -> JoinGraph:
        """This graph as it would be had the tables at `rows` never been used: the co-usage edges that
        touch them are dropped, a foreign key among them stays at its own weight (what a database new
        to the history has; `matching.fit` recalls cold-history copies over it)."""
        touched = set(rows)
        if not touched:
            return self
        coo = self.adjacency.tocoo()
        values = coo.data.copy()
        kinds = dict(self.kinds)
        for i in np.flatnonzero(np.isin(coo.row, list(touched)) | np.isin(coo.col, list(touched))):
            key = (min(int(coo.row[i]), int(coo.col[i])), max(int(coo.row[i]), int(coo.col[i])))
            kind = self.kinds.get(key, "")
            values[i] = FK_WEIGHT if kind.startswith("fk") else 0.0
            if kind == "fk+co-usage":
                kinds[key] = "fk"
            elif kind == "co-usage":
                kinds.pop(key, None)
        adjacency = sparse.csr_matrix((values, (coo.row, coo.col)), shape=self.adjacency.shape)
        adjacency.eliminate_zeros()
        return JoinGraph(adjacency, kinds)

    def neighbors(self, row: int) -> np.ndarray:
        start, end = self.adjacency.indptr[row], self.adjacency.indptr[row + 1]
        return self.adjacency.indices[start:end]

    def edge_kind(self, a: int, b: int) -> str | None:
        return self.kinds.get((min(a, b), max(a, b)))

    def personalized_pagerank(self, seeds: Mapping[int, float], rows: np.ndarray | None = None) -> np.ndarray:
        """Stationary scores of a random walk that restarts at the seeds (weighted by their scores).

        rows: limit the walk to these nodes (the requested businesses); on a large library a one-business
        walk then costs that business's size, not the library's. Scores of other nodes are 0.
        """
        size = self.adjacency.shape[0]
        if rows is not None and len(rows) < size:
            local = {int(i): j for j, i in enumerate(rows)}
            sub = JoinGraph(self.adjacency[rows][:, rows].tocsr(), {})
            sub_scores = sub.personalized_pagerank({local[r]: w for r, w in seeds.items() if r in local})
            scores = np.zeros(size)
            scores[rows] = sub_scores
            return scores
        restart = np.zeros(size)
        for row, weight in seeds.items():
            restart[row] += max(weight, 0.0)
        if restart.sum() <= 0:
            return restart
        restart /= restart.sum()
        scores = restart.copy()
        for _ in range(MAX_ITER):
            # mass on tables without edges goes back to the seeds instead of leaking away
            following = DAMPING * (self.transition @ scores) + DAMPING * scores[self.dangling].sum() * restart
            updated = following + (1 - DAMPING) * restart
            if np.abs(updated - scores).sum() < TOLERANCE:
                return updated
            scores = updated
        return scores
