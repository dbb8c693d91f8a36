"""The Matcher: requirement text in, ranked tables and a selected set out.

Stages (each timed into `MatchResult.timings_ms`):
1. recall — every configured path (lexical, dense, glossary, usage) over the assets the business may
   see: its own plus those of businesses declared `shared: true`;
2. graph — personalised PageRank from the best recalled tables over FK and co-usage edges;
3. coarse — fuse the paths (`LearnedFusion` when a fitted model is available, else RRF);
4. fine — when the business has an adapter and its cascade finds the coarse answer uncertain,
   rescore the coarse top tables with the LoRA ranker, fused with the coarse scores (`matching.fine`);
5. select — decide the table set (`SetSelector`, with the rules calibrated on fused scores when the
   fine stage ran), with FK closure.

Business isolation is enforced twice: the index is asked only for the visible businesses, and any
hit outside them is dropped before ranking, so a bug in one recall path cannot leak another
business's table. A request's scope (`databases`: the database a Text2SQL session is connected to)
is enforced the same way: every path searches inside it, and hits outside it are dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from assetmatch.config import Settings
from assetmatch.matching.fine import Cascade, FineCalibration, rerank, scored_tables
from assetmatch.matching.fusion import (
    STORED_FEATURE_PREFIX,
    Candidate,
    CoarseRanker,
    FeatureBuilder,
    LearnedFusion,
    RRFRanker,
    collect_candidates,
)
from assetmatch.matching.selection import RequestTerms, Selection, SetSelector
from assetmatch.matching.set_model import load_selector
from assetmatch.matching.types import (
    FeatureProvider,
    FineRanker,
    FineRankerBusy,
    Hit,
    MatchResult,
    RankedTable,
)
from assetmatch.models import scope_of
from assetmatch.recall.index import IndexSet

log = logging.getLogger(__name__)

COARSE_FILE = "coarse.joblib"
SELECTION_FILE = "selection.json"
OOF_FILE = "coarse_oof.json.gz"
"""Out-of-fold coarse lists of the requirements the coarse model was fitted on (fine-ranker training)."""
GRAPH_SEEDS = 5


class UnknownBusinessError(ValueError):
    """The requirement names a business the configuration does not declare."""


class UnknownDatabaseError(ValueError):
    """The request's scope names a database that holds no table the business may see."""


def models_dir(settings: Settings) -> Path:
    """Where the fitted coarse model and selection parameters are published (beside the indexes)."""
    return Path(settings.recall.index_root) / "matching"


def coarse_fit_digest(settings: Settings) -> str:
    """sha256 of the published coarse model and selection ('none' when none is published: fine
    rankers then train on BM25 candidates). A refit that learned the same model gives the same digest."""
    folder = models_dir(settings)
    files = [folder / COARSE_FILE, folder / SELECTION_FILE]
    if not files[0].exists():
        return "none"
    h = hashlib.sha256()
    for path in files:
        if path.exists():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def oof_key(business: str, text: str, databases: Iterable[str] | None = None) -> str:
    """How a requirement's out-of-fold list is looked up: business + whitespace/case-normalised text,
    + the scope it was asked in (its databases, in any order) when it had one: a list ranked in one
    scope is not the answer asked in another."""
    key = f"{business}\x1f{' '.join(text.lower().split())}"
    scope = scope_of(databases)
    return key if scope is None else f"{key}\x1f{','.join(scope)}"


def write_oof(oof: Mapping[str, tuple[Sequence[str], Sequence[float]]], path: Path) -> Path:
    """Store out-of-fold coarse lists (text key -> ids, scores), atomically."""
    import gzip
    import json

    tmp = path.with_suffix(path.suffix + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(
            {k: [list(ids), [round(float(s), 6) for s in scores]] for k, (ids, scores) in oof.items()}, f
        )
    tmp.replace(path)
    return path


def read_oof(settings: Settings) -> dict[str, tuple[list[str], list[float]]]:
    """The published out-of-fold coarse lists ({} when the fit published none)."""
    import gzip
    import json

    path = models_dir(settings) / OOF_FILE
    if not path.exists():
        return {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    return {k: (list(v[0]), [float(s) for s in v[1]]) for k, v in data.items()}


def visible_businesses(settings: Settings, business: str) -> list[str]:
    """The business itself plus every shared library; unknown businesses are refused when declared."""
    declared = {b.name: b for b in settings.businesses}
    if declared and business not in declared:
        raise UnknownBusinessError(f"unknown business {business!r} (configured: {sorted(declared)})")
    shared = [b.name for b in settings.businesses if b.shared and b.name != business]
    return [business, *shared]


SWITCHED_OFF = "cascade: the fine stage is switched off (matching.cascade: never)"


class Matcher:
    """Matches requirement text to tables over one published `IndexSet`."""

    def __init__(
        self,
        index: IndexSet,
        settings: Settings,
        coarse: CoarseRanker | None = None,
        selector: SetSelector | None = None,
        feature_provider: FeatureProvider | None = None,
        fine_ranker: FineRanker | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.feature_provider = feature_provider
        self.fine_ranker = fine_ranker
        self.builder = FeatureBuilder(index.assets, index.neighbors, feature_provider=feature_provider)
        if isinstance(coarse, LearnedFusion):
            coarse = coarse.bind(self.builder)
        self.coarse: CoarseRanker = coarse or RRFRanker()
        self.selector = selector or SetSelector()
        self.recall_paths = [p for p in settings.recall.paths if p != "graph"]
        self.use_graph = "graph" in settings.recall.paths

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        feature_provider: FeatureProvider | None = None,
        fine_ranker: FineRanker | None = None,
        online_features: Callable[[Settings, IndexSet], FeatureProvider] | None = None,
    ) -> Matcher:
        """The latest published index with its fitted coarse model and selection (RRF / defaults if absent).

        A coarse model fitted with stored features gets the Feast provider of `settings` unless one
        is given (it degrades to defaults, never fails, when the online store is unreachable);
        `online_features(settings, index)` makes that provider instead (the CLI's cached one).
        Feast is imported only then."""

        index = IndexSet.load_latest(settings.recall.index_root)
        index.cache_query_vectors = settings.recall.cache_query_vectors
        folder = models_dir(settings)
        coarse: CoarseRanker | None = None
        selector: SetSelector | None = None
        if (folder / COARSE_FILE).exists():
            coarse = LearnedFusion.load(folder / COARSE_FILE)
            if feature_provider is None and any(
                n.startswith(STORED_FEATURE_PREFIX) for n in coarse.feature_names
            ):
                if online_features is None:
                    from assetmatch.features.provider import FeastFeatureProvider

                    feature_provider = FeastFeatureProvider(settings)
                else:
                    feature_provider = online_features(settings, index)
        else:
            log.warning("no fitted coarse model in %s: using reciprocal-rank fusion", folder)
        if (folder / SELECTION_FILE).exists():
            selector = load_selector(folder / SELECTION_FILE)
        return cls(index, settings, coarse, selector, feature_provider, fine_ranker)

    # ---- stages --------------------------------------------------------------------------------
    def recall(
        self,
        business: str,
        text: str,
        leave_own_out: bool = False,
        unused_tables: Collection[str] = (),
        databases: Collection[str] | None = None,
    ) -> dict[str, list[Hit]]:
        """All recall paths (graph included) for one requirement, restricted to visible businesses.
        `leave_own_out`: the requirement is labelled history being fitted on or judged
        (`IndexSet.recall`): its own past entries do not vote, as for a new request; `unused_tables`:
        the past requests that used these do not vote either; `databases`: the request's scope, the
        databases its answer must come from (None: every table the business may see).
        Raises `UnknownDatabaseError` when the scope names a database the business has no table in."""
        businesses = visible_businesses(self.settings, business)
        scope = None if databases is None else self.check_scope(businesses, databases)
        hits = self.index.recall(
            text,
            businesses,
            k=self.settings.matching.recall_k,
            paths=self.recall_paths,
            leave_own_out=leave_own_out,
            unused_tables=unused_tables,
            databases=scope,
        )
        if self.use_graph:
            seeds = self._graph_seeds(hits)
            if seeds:
                hits["graph"] = self.index.expand(
                    seeds, businesses, k=20, unused_tables=unused_tables, databases=scope
                )
        return self._isolate(hits, set(businesses), scope)

    def check_scope(self, businesses: Sequence[str], databases: Collection[str]) -> set[str]:
        """The scope as a set, after checking that each database holds a table of `businesses`."""
        wanted = set(databases)
        if not wanted:
            raise UnknownDatabaseError("the scope names no database: leave it out to search every table")
        unknown = {database for database in wanted if not self.index.holds_database(businesses, database)}
        if unknown:
            raise UnknownDatabaseError(
                f"no table of {', '.join(map(repr, businesses))} lives in database(s) "
                f"{', '.join(map(repr, sorted(unknown)))}"
            )
        return wanted

    def held_scope(self, business: str, databases: Iterable[str] | None) -> tuple[str, ...] | None:
        """A stored request's scope (`Requirement.databases`) as it can be asked today: the databases
        the business still holds a table in. None when it had no scope, or none of them is left (a
        labelled requirement is then asked in the whole library; serving refuses such a scope)."""
        scope = scope_of(databases)
        if scope is None:
            return None
        businesses = visible_businesses(self.settings, business)
        return tuple(d for d in scope if self.index.holds_database(businesses, d)) or None

    def _graph_seeds(self, hits: Mapping[str, Sequence[Hit]]) -> dict[str, float]:
        ranked = sorted(collect_candidates(hits).values(), key=lambda c: (-c.rrf, c.asset_id))
        return {c.asset_id: c.rrf for c in ranked[:GRAPH_SEEDS]}

    def _isolate(
        self, hits: Mapping[str, Sequence[Hit]], businesses: set[str], databases: set[str] | None = None
    ) -> dict[str, list[Hit]]:
        assets = self.index.assets
        out: dict[str, list[Hit]] = {}
        for path, path_hits in hits.items():
            kept = [
                h
                for h in path_hits
                if h.asset_id in assets
                and assets[h.asset_id].business in businesses
                and (databases is None or assets[h.asset_id].database in databases)
            ]
            if len(kept) != len(path_hits):
                log.warning(
                    "path %s returned %d tables outside %s%s; dropped",
                    path,
                    len(path_hits) - len(kept),
                    businesses,
                    "" if databases is None else f" and databases {sorted(databases)}",
                )
            out[path] = kept
        return out

    def match(
        self, business: str, text: str, k: int = 10, databases: Collection[str] | None = None
    ) -> MatchResult:
        """Ranked tables (top k, plus any selected table beyond k) and the selected set; with
        `databases`, only tables of those databases (the analyst's scope, e.g. the database a Text2SQL
        session is connected to)."""
        start = time.perf_counter()
        hits = self.recall(business, text, databases=databases)
        recalled = time.perf_counter()
        result = self.rank(business, text, hits, k)
        result.timings_ms = {"recall": (recalled - start) * 1000, **result.timings_ms}
        result.timings_ms["total"] = (time.perf_counter() - start) * 1000
        return result

    def rank(self, business: str, text: str, hits: Mapping[str, Sequence[Hit]], k: int = 10) -> MatchResult:
        """Coarse rank, optional fine rank and set selection of already recalled hits."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        ranked = self.coarse.rank(text, list(collect_candidates(hits).values()))
        ranked = ranked[: self.settings.recall.candidates]
        terms = self.builder.request_terms(text, [c.asset_id for c in ranked])
        timings["coarse"] = (time.perf_counter() - t0) * 1000

        fine: dict[str, float] = {}
        model_version = getattr(self.coarse, "name", "")
        scores = [c.score for c in ranked]
        depth, skipped, degraded = 0, "", False
        selector = self.selector
        coarse_ids = [c.asset_id for c in ranked]
        selection: Selection | None = None  # the coarse selection, once the cascade needed it
        if self.fine_ranker is not None and self.fine_ranker.version(business) and ranked:
            t1 = time.perf_counter()
            calibration = self.fine_ranker.calibration(business)
            cascade = self._cascade(calibration)
            if cascade is None:
                skipped = SWITCHED_OFF
            else:
                selection = self._select(ranked, scores, terms, self.selector)
                depth = cascade.depth_for(
                    coarse_ids,
                    scores,
                    selection.asset_ids,
                    calibration.familiar,
                    self.settings.matching.fine_top_n,
                )
                skipped = "" if depth else cascade.why_skipped()
            if depth:
                try:
                    fine, ranked, scores = self._fine_rank(business, text, ranked, depth, calibration)
                except FineRankerBusy as busy:  # overloaded or past the deadline: the coarse answer
                    depth, skipped, degraded = 0, f"overloaded ({busy})", True
            if depth:
                model_version = self.fine_ranker.version(business)
                threshold = self.settings.matching.fine_thresholds.get(business)  # config wins
                selector = calibration.selector(self.selector)
                if threshold is not None:  # the rules at that threshold, set model or not
                    selector = selector.with_threshold(threshold)
                # the fused scores decide the set, unless the calibration keeps the coarse one here;
                # a configured threshold always decides (the operator asked for its rules)
                if threshold is not None or not calibration.keeps_coarse_set(
                    coarse_ids, [c.asset_id for c in ranked]
                ):
                    selection = None
            timings["fine"] = (time.perf_counter() - t1) * 1000

        t2 = time.perf_counter()
        if selection is None:
            selection = self._select(ranked, scores, terms, selector)
        timings["select"] = (time.perf_counter() - t2) * 1000

        selected = set(selection.asset_ids)
        shown = [c for i, c in enumerate(ranked) if i < k or c.asset_id in selected]
        tables = [
            self._ranked_table(c, fine.get(c.asset_id), selection.reasons.get(c.asset_id)) for c in shown
        ]
        for table in tables:
            table.selected = table.asset_id in selected
        return MatchResult(
            business=business,
            requirement=text,
            ranked=tables,
            selected=selection.asset_ids,
            index_version=str(self.index.manifest.get("id", "")),
            model_version=model_version,
            timings_ms=timings,
            fine_depth=depth,
            fine_skipped=skipped,
            degraded=degraded,
            coarse_model=self.coarse_model,
        )

    @property
    def coarse_model(self) -> str:
        """What the coarse ranking was fitted on (`MatchResult.coarse_model`)."""
        return self.coarse.trained_on if isinstance(self.coarse, LearnedFusion) else "fusion"

    def _cascade(self, calibration: FineCalibration) -> Cascade | None:
        """The adapter's cascade as `matching.cascade` has it: as calibrated, without its margin test
        (always), or None (never: the fine stage is switched off)."""
        mode = self.settings.matching.cascade
        if mode == "never":
            return None
        if mode == "always":
            return dataclasses.replace(calibration.cascade, max_margin=None)
        return calibration.cascade

    def _select(
        self, ranked: Sequence[Candidate], scores: Sequence[float], terms: RequestTerms, selector: SetSelector
    ) -> Selection:
        """The set `selector` picks from the ranked candidates with these scores."""
        scored = scored_tables([c.asset_id for c in ranked], scores, self.builder.group_of, terms)
        return selector.select(scored, self.builder.linked)

    def _fine_rank(
        self, business: str, text: str, ranked: list[Candidate], depth: int, calibration: FineCalibration
    ) -> tuple[dict[str, float], list[Candidate], list[float]]:
        """Rescore the coarse top `depth` with the fine ranker and the business's fusion; the rest keep
        their coarse order below them (selection score 0: they were not judged)."""
        assert self.fine_ranker is not None
        assets = [self.index.assets[c.asset_id] for c in ranked[:depth]]
        examples = {c.asset_id: c.example for c in ranked[:depth] if c.example}
        siblings = {a.asset_id: self.builder.siblings(a.asset_id) for a in assets}
        logits = self.fine_ranker.logits(business, text, assets, examples, siblings)
        answer = rerank([c.asset_id for c in ranked], [c.score for c in ranked], logits, calibration.fusion)
        by_id = {c.asset_id: c for c in ranked}
        return answer.fine, [by_id[a] for a in answer.ids], answer.scores

    def _ranked_table(
        self, cand: Candidate, fine_score: float | None, selection_reason: str | None
    ) -> RankedTable:
        asset = self.index.assets[cand.asset_id]
        reasons = []
        for path in sorted(cand.path_ranks, key=lambda p: cand.path_ranks[p]):
            terms = [t if len(t) <= 60 else t[:57] + "..." for t in (cand.matched.get(path) or [])[:3]]
            matched = f" ({'; '.join(terms)})" if terms else ""
            reasons.append(f"{path} #{cand.path_ranks[path]}{matched}")
        if selection_reason:
            reasons.append(f"selected: {selection_reason}")
        return RankedTable(
            asset_id=cand.asset_id,
            business=asset.business,
            name=asset.name,
            score=fine_score if fine_score is not None else cand.score,
            coarse_score=cand.score,
            fine_score=fine_score,
            path_scores=dict(cand.path_scores),
            path_ranks=dict(cand.path_ranks),
            reasons=reasons,
        )


def describe(result: MatchResult) -> dict[str, Any]:
    """A JSON-ready dict of a match result (for `assetmatch match --json` and reports)."""
    from dataclasses import asdict

    return asdict(result)
