"""Candidate sources for training and judging fine rankers.

- `CoarseCandidates` (the production path): the Matcher's multi-path recall and fitted coarse
  model over the business's visible library, exactly what the fine ranker sees when it serves.
  Requirements the coarse model was fitted on get their **out-of-fold** lists (saved by the fit,
  `matching.matcher.OOF_FILE`): ranked by a coarse model that never saw them, so training and
  validation lists are as hard as serving's, not easier. Others are ranked live, with their own
  entries left out of the usage vote (`leave_own_out`), as the fit does.
- `Bm25Candidates`: a small per-business BM25, for benchmarks and tests that run without
  published indexes. Tokens are `ranking.prompt.terms` (words, 5-letter prefixes, Chinese
  bigrams) of the table name, comment and columns.

Both are `training.pairs.Candidates` callables — `candidates(business, text, k, databases)` gives
asset ids best first — and both give the whole coarse answer with `coarse(business, text, k,
databases)` (ids, coarse scores and the coarse selection), which the fusion, the cascade and the
coarse-only arm of the A/B gate read. Tables of businesses the requirement may not see are never
returned; `databases` is the scope a labelled requirement was asked in (`Requirement.databases`,
None for the whole library), so it is trained on and judged with the list serving gave it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from assetmatch.config import Settings
from assetmatch.matching.fine import CoarseAnswer, scored_tables
from assetmatch.matching.fusion import FeatureBuilder, collect_candidates
from assetmatch.matching.matcher import (
    COARSE_FILE,
    OOF_FILE,
    Matcher,
    coarse_fit_digest,
    models_dir,
    oof_key,
    read_oof,
)
from assetmatch.models import TableAsset
from assetmatch.ranking.prompt import column_text, header_text, terms
from assetmatch.recall import publish

log = logging.getLogger(__name__)


def _tokens(asset: TableAsset) -> list[str]:
    text = header_text(asset) + " " + " ".join(column_text(c) for c in asset.columns)
    return sorted(terms(text)) or ["_empty_"]


class Bm25Candidates:
    """candidates(business, text, k) over an in-memory BM25 index per business (bm25s)."""

    def __init__(self, assets: Sequence[TableAsset]) -> None:
        import bm25s

        self._ids: dict[str, list[str]] = {}
        self._index: dict[str, Any] = {}
        self._databases: dict[str, set[str]] = {}
        self.assets = {a.asset_id: a for a in assets}
        self._builder = FeatureBuilder(self.assets)  # the request terms each table contains
        by_business: dict[str, list[TableAsset]] = {}
        for a in sorted(assets, key=lambda a: a.asset_id):
            by_business.setdefault(a.business, []).append(a)
        for business, items in by_business.items():
            retriever = bm25s.BM25()
            retriever.index([_tokens(a) for a in items], show_progress=False)
            self._index[business] = retriever
            self._ids[business] = [a.asset_id for a in items]
            self._databases[business] = {a.database for a in items}

    def neighbors(self, asset_id: str) -> Collection[str]:
        return ()

    def group_of(self, asset_id: str) -> str:
        asset = self.assets.get(asset_id)
        return (asset.database or asset.business) if asset is not None else ""

    def siblings(self, asset_id: str) -> tuple[str, ...] | None:
        return self._builder.siblings(asset_id)

    def scored(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        ids = self._ids.get(business)
        if not ids:
            return []
        query = sorted(terms(text)) or ["_empty_"]
        # scoped: every table is scored, then those outside the scope dropped; a scope of databases
        # the business no longer holds is dropped (`Matcher.held_scope`)
        if databases is not None:
            databases = set(databases) & self._databases[business] or None
        wanted = len(ids) if databases is not None else min(k, len(ids))
        docs, scores = self._index[business].retrieve([query], k=wanted, show_progress=False)
        ranked = [(float(s), ids[int(d)]) for d, s in zip(docs[0], scores[0])]
        if databases is not None:
            ranked = [(s, a) for s, a in ranked if self.assets[a].database in databases][:k]
        # ties (e.g. score 0) in asset-id order so the result never depends on the index's internals
        ranked.sort(key=lambda t: (-t[0], t[1]))
        return [(asset_id, score) for score, asset_id in ranked]

    def coarse(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> CoarseAnswer:
        """BM25 scores scaled to [0, 1] by the best one; the coarse set is the top table."""
        scored = self.scored(business, text, k, databases)
        top = max((s for _, s in scored), default=0.0) or 1.0
        ids = [a for a, _ in scored]
        terms = self._builder.request_terms(text, ids)
        return CoarseAnswer(ids, [s / top for _, s in scored], ids[:1], terms=terms)

    def __call__(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> list[str]:
        return [a for a, _ in self.scored(business, text, k, databases)]


class CoarseCandidates:
    """The production candidates: recall + fitted coarse model + coarse selection (see the module
    docstring). Answers are cached per (business, text): training, calibration and the gate ask
    for the same requirement several times."""

    def __init__(
        self, matcher: Matcher, oof: Mapping[str, tuple[Sequence[str], Sequence[float]]] | None = None
    ) -> None:
        """oof: the fit's out-of-fold lists, keyed by `oof_key` (business, text and the scope the fit
        asked the requirement in)."""
        self.matcher = matcher
        self.oof = dict(oof or {})
        self.assets: Mapping[str, TableAsset] = matcher.index.assets
        self._cache: dict[tuple[str, int], CoarseAnswer] = {}
        self.oof_hits = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CoarseCandidates:
        """The published index with its coarse model, selection and out-of-fold lists."""
        return cls(Matcher.from_settings(settings), read_oof(settings))

    def neighbors(self, asset_id: str) -> Collection[str]:
        return self.matcher.builder.linked(asset_id)

    def group_of(self, asset_id: str) -> str:
        return self.matcher.builder.group_of(asset_id)

    def siblings(self, asset_id: str) -> tuple[str, ...] | None:
        return self.matcher.builder.siblings(asset_id)

    def coarse(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> CoarseAnswer:
        """The requirement's coarse answer, asked in `databases` (its scope, `Requirement.databases`;
        None: the whole library). A database the business no longer holds is left out of the scope
        (`Matcher.held_scope`). The out-of-fold list is used when the fit asked it in the same scope."""
        scope = self.matcher.held_scope(business, databases)
        key = oof_key(business, text, scope)
        cached = self._cache.get((key, k))
        if cached is not None:
            return cached
        # labelled history: its own entries do not vote
        hits = self.matcher.recall(business, text, leave_own_out=True, databases=scope)
        folded = self.oof.get(key)
        if folded is not None:
            self.oof_hits += 1
            ids, scores = list(folded[0]), [float(s) for s in folded[1]]
        else:
            result = self.matcher.rank(business, text, hits, k=k)
            ids = [t.asset_id for t in result.ranked]
            scores = [t.coarse_score for t in result.ranked]
        terms = self.matcher.builder.request_terms(text, ids)
        selected = self.matcher.selector.select(
            scored_tables(ids, scores, self.group_of, terms), self.neighbors
        ).asset_ids
        # what the Matcher hands the fine ranker beside each table: the nearest past request that
        # used it, found by the usage path with this requirement's own entries left out
        examples = {c.asset_id: c.example for c in collect_candidates(hits).values() if c.example}
        answer = CoarseAnswer(
            ids[:k],
            scores[:k],
            selected,
            {a: examples[a] for a in ids[:k] if a in examples},
            terms.restricted(ids[:k]),
        )
        self._cache[(key, k)] = answer
        return answer

    def __call__(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> list[str]:
        return self.coarse(business, text, k, databases).ids


# The last CoarseCandidates this thread built, with what its answers depend on (`_publication`).
_last = threading.local()


def _publication(settings: Settings) -> tuple[str, ...]:
    """What a CoarseCandidates answers from: the settings, the published index, the published coarse
    fit and its out-of-fold lists."""
    oof = models_dir(settings) / OOF_FILE
    return (
        hashlib.sha256(settings.model_dump_json().encode()).hexdigest(),
        str(publish.current_id(Path(settings.recall.index_root))),
        coarse_fit_digest(settings),
        str(oof.stat().st_mtime_ns) if oof.exists() else "",
    )


def production_candidates(
    settings: Settings, assets: Sequence[TableAsset]
) -> CoarseCandidates | Bm25Candidates:
    """The published coarse path when there is one; BM25 over `assets` otherwise (logged).

    A run trains several adapters and then gates them (the shared one, each business's, the
    promotion), each asking the coarse path about the same requirements: the last CoarseCandidates
    built is handed out again while the settings, the published index and the coarse fit are the
    same, so each requirement's coarse answer is computed once per publication (~66 ms each on the
    demo), not once per adapter. Kept per thread (a CoarseCandidates is not shared between
    concurrent tasks) and only the last one (a worker that outlives a publication lets it go)."""
    if (models_dir(settings) / COARSE_FILE).exists():
        key = _publication(settings)
        if getattr(_last, "key", None) == key:
            cached: CoarseCandidates = _last.candidates
            return cached
        try:
            built = CoarseCandidates.from_settings(settings)
        except FileNotFoundError as exc:
            log.warning("no published index to take candidates from (%s): using BM25 candidates", exc)
        else:
            _last.key, _last.candidates = key, built
            return built
    else:
        log.warning("no fitted coarse model published: fine rankers train on BM25 candidates")
    return Bm25Candidates(assets)
