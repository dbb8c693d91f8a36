"""The query recall paths, one class each behind the `RecallPath` protocol, in a registry the index
iterates (`QUERY_PATHS`: name -> implementation), as sources have theirs. The names are defined once,
in `assetmatch.types.RecallPathName`; "graph" is not a query path: it expands the others' seeds
(`IndexSet.expand`). A new path is a class with `name`, `uses_vectors` and `search`, registered with
`register`, plus its name in `RecallPathName` (so the config accepts it and the coarse model gets its
features) and its data in the index build.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from assetmatch.types import PATHS, Hit, RecallPathName

if TYPE_CHECKING:  # the index imports this module; paths only read the IndexSet they are given
    from assetmatch.recall.index import IndexSet

USAGE_NEIGHBOURS = 20  # past requirements that may vote, per query
RRF_K = 60
USAGE_MIN_COSINE = 0.3  # MiniLM cosine below which two requests are taken as unrelated


@dataclass(frozen=True)
class Query:
    """One requirement as every path reads it (computed once per `IndexSet.recall`)."""

    text: str  # normalized
    tokens: Sequence[str]
    weights: dict[str, float]  # BM25 query tokens with their weights (own tokens + Chinese glosses)
    businesses: Collection[str]
    spans: list[tuple[int, int]]  # the businesses' rows in the asset arrays
    vectors: tuple[np.ndarray, str] | None  # query embeddings and gloss, when a path uses them
    # The requirement is itself labelled history (fitting the coarse model, training and judging fine
    # rankers): its own entries among the past requests, and its paraphrases (the past requests
    # answered by the same query), do not vote. A new request has none, so a model fitted or judged
    # with them would learn and report an answer that serving never sees.
    leave_own_out: bool = False
    # Rows of tables taken as never used before: the past requests that used any of them do not vote.
    # Fitting the coarse model also sees its requirements as a new database's requests would (no
    # history for the tables they need), or it learns to trust the usage path where it is misleading.
    unused_rows: Collection[int] = ()
    # The request's scope (`IndexSet.recall(databases=...)`): the sorted rows of the tables it may be
    # answered with; None for the businesses' whole library.
    scope: np.ndarray | None = None

    @cached_property
    def _scope_rows(self) -> frozenset[int]:
        return frozenset() if self.scope is None else frozenset(self.scope.tolist())

    def within(self, rows: Sequence[int]) -> Sequence[int]:
        """`rows` without those outside the request's scope (`rows` itself when it has none)."""
        if self.scope is None:
            return rows
        inside = self._scope_rows
        return [row for row in rows if row in inside]


@runtime_checkable
class RecallPath(Protocol):
    """One recall path: candidates for a query from the index's data, best first, at most k."""

    name: RecallPathName
    uses_vectors: bool  # needs the query's dense vectors (computed once for all paths that do)

    def search(self, index: IndexSet, query: Query, k: int) -> list[Hit]: ...


QUERY_PATHS: dict[str, RecallPath] = {}
"""name -> implementation, in registration order (the order `IndexSet.recall` runs them)."""


def register(path: RecallPath) -> RecallPath:
    if path.name not in PATHS or path.name == "graph":
        raise ValueError(
            f"recall path {path.name!r} is not a query path named in assetmatch.types.RecallPathName"
        )
    QUERY_PATHS[path.name] = path
    return path


def top_rows(scores: np.ndarray, spans: list[tuple[int, int]], k: int) -> list[tuple[int, float]]:
    """Best k rows with a positive score inside the spans, best first; ties broken by row order."""
    if not spans or k <= 0:
        return []
    rows = np.concatenate([np.arange(s, e) for s, e in spans])
    values = scores[rows]
    positive = values > 0
    rows, values = rows[positive], values[positive]
    if len(rows) > k:
        part = np.argpartition(-values, k - 1)[:k]
        rows, values = rows[part], values[part]
    order = np.lexsort((rows, -values))
    return [(int(rows[i]), float(values[i])) for i in order]


class LexicalPath:
    """BM25 over table tokens, in the shards of the query's businesses only; the matched tokens are
    the reason."""

    name: RecallPathName = "lexical"
    uses_vectors = False

    def search(self, index: IndexSet, query: Query, k: int) -> list[Hit]:
        found = index.lexical.search(query.weights, query.businesses, k, rows=query.scope)
        return [
            Hit(index.asset_ids[row], score, rank, "lexical", matched)
            for rank, (row, score, matched) in enumerate(found, start=1)
        ]


class DensePath:
    """MiniLM embeddings of the requirement (and its English gloss) against the tables', in FAISS."""

    name: RecallPathName = "dense"
    uses_vectors = True

    def search(self, index: IndexSet, query: Query, k: int) -> list[Hit]:
        if index.dense is None:
            return []
        if query.vectors is None:
            return []
        queries, gloss = query.vectors
        found = index.dense.search(queries, list(query.businesses), k, rows=query.scope)
        reason = [f"similar meaning (via translation: {gloss})"] if gloss else ["similar meaning"]
        return [
            Hit(index.asset_ids[row], sim, rank, "dense", [*reason, f"cosine {sim:.2f}"])
            for rank, (row, sim) in enumerate(found, start=1)
        ]


class GlossaryPath:
    """Business terms, synonyms and aliases found in the requirement point to their tables."""

    name: RecallPathName = "glossary"
    uses_vectors = False

    def search(self, index: IndexSet, query: Query, k: int) -> list[Hit]:
        lowered = query.text.lower()
        query_tokens = set(query.tokens)
        scores: dict[int, float] = defaultdict(float)
        reasons: dict[int, list[str]] = defaultdict(list)
        for business in set(query.businesses):
            for entry in index.glossary.get(business, []):
                best = 0.0
                for alias, tokens in zip(entry.aliases, entry.alias_tokens):
                    if alias and alias in lowered:
                        best = max(best, 1.0 + 0.1 * len(alias))  # literal mention; longer = more specific
                    elif tokens and set(tokens) <= query_tokens:
                        best = max(best, 0.5 + 0.05 * len(tokens))  # all its words, in any order/inflection
                if best > 0:
                    for row in query.within(entry.rows):
                        scores[row] += best
                        reasons[row].append(f"glossary term: {entry.term}")
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [
            Hit(index.asset_ids[row], score, rank, "glossary", reasons[row])
            for rank, (row, score) in enumerate(ranked, start=1)
        ]


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


class UsagePath:
    """The nearest past requirements and logged queries (BM25 + dense) vote for the tables they used."""

    name: RecallPathName = "usage"
    uses_vectors = True

    def search(self, index: IndexSet, query: Query, k: int) -> list[Hit]:
        spans = index._spans(index.past_ranges, query.businesses)
        if not spans:
            return []
        own = index.past_rows_of_request(query.text) if query.leave_own_out else []
        if query.unused_rows:
            own = sorted({*own, *index.past_rows_using(query.unused_rows)})
        silent: list[int] | np.ndarray = own  # the past requests that do not vote
        if query.scope is not None:  # only those that used a table in scope vote
            silent = np.ones(len(index.past), dtype=bool)
            silent[index.past_rows_using(query.scope.tolist())] = False
            silent[own] = True
        lexical, _ = index.usage_lexical.scores(query.weights)
        lexical[silent] = 0.0  # a fresh array per call
        by_lexical = top_rows(lexical, spans, USAGE_NEIGHBOURS)
        by_dense: list[tuple[int, float]] = []
        sims: np.ndarray | None = None
        vector = None if query.vectors is None else query.vectors[0][0]
        if vector is not None and index.usage_vectors is not None and len(index.usage_vectors):
            sims = index.usage_vectors @ vector
            sims[sims < USAGE_MIN_COSINE] = 0.0  # unrelated texts do not vote
            sims[silent] = 0.0
            by_dense = top_rows(sims, spans, USAGE_NEIGHBOURS)
        # neighbours fused by reciprocal rank: BM25 and cosine scores are on different scales
        neighbour: dict[int, float] = defaultdict(float)
        for ranking in (by_lexical, by_dense):
            for rank, (i, _) in enumerate(ranking, start=1):
                neighbour[i] += 1.0 / (RRF_K + rank)
        allowed = set(query.businesses)
        scores: dict[int, float] = defaultdict(float)
        reasons: dict[int, list[str]] = defaultdict(list)
        example: dict[int, str] = {}  # row -> the nearest past request that used it (neighbours best first)
        nearest: dict[int, float] = defaultdict(float)  # row -> the highest cosine of those requests
        nearest_words: dict[int, float] = defaultdict(float)  # row -> their highest share of words
        words = frozenset(query.tokens)
        for i, weight in sorted(neighbour.items(), key=lambda item: -item[1]):
            past = index.past[i]
            cosine = 0.0 if sims is None else float(sims[i])  # one neighbour's, for each table it used
            shared = jaccard(words, index.past_words(i))
            for row in query.within(past.rows):
                if index.business_of(row) in allowed:
                    scores[row] += weight
                    example.setdefault(row, past.text)
                    nearest[row] = max(nearest[row], cosine)
                    nearest_words[row] = max(nearest_words[row], shared)
                    reason = f"used by a similar past request: {past.text[:80]}"
                    if len(reasons[row]) < 3 and reason not in reasons[row]:  # the same text logged twice
                        reasons[row].append(reason)
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [
            Hit(
                index.asset_ids[row],
                score,
                rank,
                "usage",
                reasons[row],
                example[row],
                nearest[row],
                nearest_words[row],
            )
            for rank, (row, score) in enumerate(ranked, start=1)
        ]


for _path in (LexicalPath(), DensePath(), GlossaryPath(), UsagePath()):
    register(_path)
