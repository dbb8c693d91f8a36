"""Coarse ranking: fuse the recall paths' hits into one ranked candidate list.

Two rankers with one interface (`CoarseRanker.rank`):

- `RRFRanker`: reciprocal-rank fusion, score = sum over paths of 1 / (60 + rank). Needs no training;
  the baseline every learned model must beat.
- `LearnedFusion`: a scikit-learn classifier over per-(requirement, candidate) features (`FeatureBuilder`):
  each path's score, normalised score, 1/rank and presence; the RRF score; cheap table features
  (column count, name-token overlap with the query, foreign-key degree); *group* features — how strong
  the candidate's database is among all candidates, and how strong its FK neighbours are — because the
  tables a requirement needs sit in one database and join each other; the same database ranking from
  the metadata paths alone (without the history's usage and co-usage votes), so the model can tell a
  vote for a namesake elsewhere from the tables' own evidence; how much of the request the
  candidate's whole database covers (every table's name, comment and columns, recalled or not: a
  question about singers and concerts belongs to the database that has both); plus any `FeatureProvider`
  features (Feast). The model family and its regularisation are chosen by grouped cross-validation on
  the training requirements only (`fit_learned_fusion`), and saved with joblib together with its
  feature list so a loaded model always sees the columns it was trained on; a numpy copy of its
  predictor is saved beside it (`assetmatch.matching.predictor`) so that loading it to answer a
  requirement does not import scikit-learn.

  An optional **second stage** reads the first stage's scores of the other candidates
  (`FeatureBuilder.context`): is the candidate in the database of the best-scored table, a neighbour
  of the best two in the join graph (foreign keys and co-usage), a table that joins them, how strong
  its neighbours and its database are by the first stage. The group features above count the recall paths' votes; these count the fitted
  model's, so a table the request names no word of but that joins the two tables it does name rises
  with them. It is fitted on the first stage's out-of-fold scores (stacking) and kept only when
  grouped cross-validation ranks better with it (`fit_learned_fusion`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assetmatch.matching.selection import RequestTerms
from assetmatch.matching.types import PATHS, FeatureProvider, Hit
from assetmatch.models import TableAsset
from assetmatch.recall.tokenize import has_cjk, tokenize, weighted_gloss_tokens
from assetmatch.text import same_request_key

log = logging.getLogger(__name__)

RRF_K = 60
NO_RANK = 1000  # rank given to a path that did not find the candidate (only used for 1/rank -> ~0)


@dataclass
class Candidate:
    """One table found by at least one recall path, with everything the paths said about it."""

    asset_id: str
    path_scores: dict[str, float] = field(default_factory=dict)
    path_ranks: dict[str, int] = field(default_factory=dict)
    matched: dict[str, list[str]] = field(default_factory=dict)  # path -> matched terms
    rrf: float = 0.0
    score: float = 0.0  # coarse score set by a CoarseRanker (a probability for LearnedFusion)
    example: str = ""  # the most similar past request that used it (usage path), for the fine ranker
    nearest: float = 0.0  # the usage path's `Hit.nearest`
    nearest_words: float = 0.0  # the usage path's `Hit.nearest_words`


def collect_candidates(hits_by_path: Mapping[str, Sequence[Hit]], rrf_k: int = RRF_K) -> dict[str, Candidate]:
    """Merge the paths' hit lists into one candidate per asset, with its RRF score."""
    candidates: dict[str, Candidate] = {}
    for path, hits in hits_by_path.items():
        for hit in hits:
            cand = candidates.setdefault(hit.asset_id, Candidate(hit.asset_id))
            # a path may report an asset twice (e.g. zh->en and original text): keep the better rank
            if path in cand.path_ranks and cand.path_ranks[path] <= hit.rank:
                continue
            cand.path_scores[path] = float(hit.score)
            cand.path_ranks[path] = int(hit.rank)
            cand.matched[path] = list(hit.matched)
            cand.example = hit.example or cand.example
            cand.nearest = max(cand.nearest, hit.nearest)
            cand.nearest_words = max(cand.nearest_words, hit.nearest_words)
    for cand in candidates.values():
        cand.rrf = sum(1.0 / (rrf_k + r) for r in cand.path_ranks.values())
    return candidates


HISTORY_PATHS = frozenset({"usage", "graph"})  # paths whose votes come from past requests (co-usage)


def metadata_rrf(cand: Candidate, rrf_k: int = RRF_K) -> float:
    """The candidate's RRF over the paths that read only the library's metadata (not the history)."""
    return sum(1.0 / (rrf_k + r) for p, r in cand.path_ranks.items() if p not in HISTORY_PATHS)


def rank_groups(values: Sequence[float], groups: Sequence[str]) -> dict[str, int]:
    """Each group's rank (1 = best) by its best member's value; ties by group name."""
    best: dict[str, float] = {}
    for value, group in zip(values, groups):
        best[group] = max(best.get(group, value), value)
    return {g: i + 1 for i, g in enumerate(sorted(best, key=lambda g: (-best[g], g)))}


def sort_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first by score, then RRF, then asset id (deterministic ties)."""
    return sorted(candidates, key=lambda c: (-c.score, -c.rrf, c.asset_id))


class CoarseRanker(Protocol):
    """Scores candidates in place and returns them best first."""

    name: str

    def rank(self, query: str, candidates: Sequence[Candidate]) -> list[Candidate]: ...


class RRFRanker:
    """Reciprocal-rank fusion over the paths (score = sum of 1/(60 + rank)); no training."""

    name = "rrf"

    def rank(self, query: str, candidates: Sequence[Candidate]) -> list[Candidate]:
        for cand in candidates:
            cand.score = cand.rrf
        return sort_candidates(candidates)


# ---- features ------------------------------------------------------------------------------
STORED_FEATURE_PREFIX = "fp_"  # columns that come from the FeatureProvider (Feast), not from recall

# what the second stage reads beside the first stage's features (`FeatureBuilder.context`)
CONTEXT_FEATURES = [
    "first_score",
    "first_score_norm",
    "first_inv_rank",
    "first_group_is_top",
    "linked_to_first_top",
    "linked_to_first_second",
    "joins_first_top_two",
    "linked_in_first_top3",
    "neighbor_max_first_norm",
    "neighbor_top2_first_norm",
    "group_other_max_first_norm",
    "group_first_share",
]


@functools.lru_cache(maxsize=4096)
def word_tokens(text: str) -> frozenset[str]:
    """The recall index's BM25 tokens of `text` (identifiers split, stemmed), plus the English glosses of
    its Chinese words, so overlap features mean the same for a Chinese and an English requirement.

    Cached: a request's tokens are read by the overlap features and again by set selection's coverage
    rule (`FeatureBuilder.request_terms`); glossing Chinese costs ~0.3 ms a request."""

    tokens = set(tokenize(text))
    if has_cjk(text):
        tokens |= set(weighted_gloss_tokens(text))
    return frozenset(tokens)


def _group_key(asset: TableAsset | None) -> str:
    """The group a table belongs to (its database, else its business): tables answered together."""
    if asset is None:
        return ""
    return asset.database or asset.business


@dataclass
class _AssetStatic:
    name_tokens: frozenset[str]
    column_tokens: frozenset[str]
    n_columns: int
    group: str
    direct_tokens: frozenset[str] = frozenset()  # name, comment and the columns that are no foreign key
    key_tokens: tuple[tuple[str, frozenset[str]], ...] = ()  # (referenced asset id, its key columns' tokens)


class FeatureBuilder:
    """Turns a requirement's candidates into a feature matrix (one row per candidate).

    The feature list is fixed by the recall path names and the feature provider's names, so a saved model
    and the builder agree on the columns (checked when a model is loaded).
    """

    def __init__(
        self,
        assets: Mapping[str, TableAsset],
        neighbors: Callable[[str], set[str]] | None = None,
        paths: Sequence[str] = PATHS,
        feature_provider: FeatureProvider | None = None,
    ) -> None:
        self.assets = assets
        self.neighbors = neighbors or (lambda _asset_id: set())
        self.paths = list(paths)
        self.feature_provider = feature_provider
        self._static: dict[str, _AssetStatic] = {}
        self._linked: dict[str, frozenset[str]] = {}
        self._group_tokens: dict[str, frozenset[str]] | None = None
        self._databases: dict[tuple[str, str], tuple[tuple[str, str], ...]] | None = None
        self._databases_per_business: Counter[str] = Counter()  # built with _databases

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for p in self.paths:
            names += [f"{p}_score", f"{p}_score_norm", f"{p}_inv_rank", f"{p}_present"]
        names += [
            "rrf",
            "rrf_norm",
            "n_paths",
            "log_n_columns",
            "name_overlap",
            "column_overlap",
            "query_coverage",
            "fk_degree",
            "group_rank",
            "group_is_top",
            "group_max_rrf_norm",
            "group_sum_rrf_norm",
            "group_n_candidates",
            "rank_in_group",
            "neighbor_max_rrf_norm",
            "neighbor_n_candidates",
            "metadata_rrf_norm",
            "metadata_group_rank",
            "metadata_group_is_top",
            "group_coverage",
            "group_coverage_gap",
            "group_coverage_is_top",
            "usage_nearest",
            "usage_nearest_gap",
            "usage_nearest_words",
            "usage_nearest_words_gap",
        ]
        if self.feature_provider is not None:
            names += [f"{STORED_FEATURE_PREFIX}{n}" for n in self.feature_provider.feature_names]
        return names

    def _static_of(self, asset_id: str) -> _AssetStatic:
        info = self._static.get(asset_id)
        if info is None:
            asset = self.assets.get(asset_id)
            if asset is None:
                info = _AssetStatic(word_tokens(asset_id.rsplit(".", 1)[-1]), frozenset(), 0, "")
            else:
                name_tokens = word_tokens(f"{asset.name} {asset.comment}")
                col_text = " ".join(f"{c.name} {c.comment}" for c in asset.columns)
                comments = {c.name: c.comment for c in asset.columns}
                key_columns = {name for fk in asset.foreign_keys for name in fk.columns}
                plain_text = " ".join(
                    f"{c.name} {c.comment}" for c in asset.columns if c.name not in key_columns
                )
                keys = tuple(  # a key to the table itself (a manager_id) names no other table
                    (fk.ref_asset_id, word_tokens(" ".join(f"{c} {comments.get(c, '')}" for c in fk.columns)))
                    for fk in asset.foreign_keys
                    if fk.ref_asset_id != asset_id
                )
                info = _AssetStatic(
                    name_tokens,
                    word_tokens(col_text),
                    len(asset.columns),
                    _group_key(asset),
                    name_tokens | word_tokens(plain_text),
                    keys,
                )
            self._static[asset_id] = info
        return info

    def group_of(self, asset_id: str) -> str:
        """The candidate's group (database, else business), as the group features use it."""
        return self._static_of(asset_id).group

    def request_terms(self, query: str, asset_ids: Iterable[str]) -> RequestTerms:
        """What selection reads of `query` in each table: the terms its name, comment or columns
        contain (the same tokens the overlap features count; the coverage rule of `SelectionParams`),
        and (term, referenced asset id) for each term it contains only in a foreign-key column
        ("渠道" in `channel_id` "渠道ID", referencing `dim_channel`): the request names an attribute
        the table holds as a key only, which the table it references describes — what the set model
        reads to tell a fact table that answers alone from one that needs its dimension table."""
        q_tokens = word_tokens(query)
        contained, in_keys = {}, {}
        for asset_id in asset_ids:
            info = self._static_of(asset_id)
            contained[asset_id] = q_tokens & (info.name_tokens | info.column_tokens)
            in_keys[asset_id] = frozenset(
                (term, ref)
                for ref, tokens in info.key_tokens
                for term in (q_tokens & tokens) - info.direct_tokens
            )
        return RequestTerms(contained, in_keys)

    def warmup(self) -> dict[str, frozenset[str]]:
        """Tokenize the whole library once (every table's tokens, each database's union of them), so
        the first request after a load does not (58 ms for Spider's 876 tables, on one core)."""
        if self._group_tokens is None:
            merged: dict[str, set[str]] = defaultdict(set)
            for asset_id in self.assets:
                info = self._static_of(asset_id)
                merged[info.group] |= info.name_tokens | info.column_tokens
            self._group_tokens = {g: frozenset(t) for g, t in merged.items()}
            self._database_tables()  # and each database's tables (the fine ranker's siblings)
        return self._group_tokens

    def _database_tables(self) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
        """(business, database) -> its tables' (asset id, name), in library order, and how many
        databases each business holds (`_databases_per_business`); built once."""
        if self._databases is None:
            members: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
            for a in self.assets.values():
                members[(a.business, a.database)].append((a.asset_id, a.name))
            self._databases = {key: tuple(tables) for key, tables in members.items()}
            self._databases_per_business = Counter(business for business, _ in self._databases)
        return self._databases

    def siblings(self, asset_id: str) -> tuple[str, ...] | None:
        """The names of the other tables of the table's database (same business and database, in
        library order): what a fine ranker trained with `database_context` reads beside it.

        None when the table's business holds a single database: every candidate it is ranked
        against would read the same context, which tells none apart and only takes columns out of
        the token budget (a warehouse whose businesses are one database each, like the demo's
        games). Training, the gate and serving all ask here, so an adapter reads what it was
        trained on."""
        asset = self.assets.get(asset_id)
        if asset is None:
            return ()
        tables = self._database_tables()
        if self._databases_per_business[asset.business] < 2:
            return None
        return tuple(
            name for other, name in tables.get((asset.business, asset.database), ()) if other != asset_id
        )

    def group_tokens(self, group: str) -> frozenset[str]:
        """Every name, comment and column token of every table of `group` (the whole database, not
        only the tables recalled): what the database as a whole can answer."""
        return self.warmup().get(group, frozenset())

    def _coverage(self, q_tokens: frozenset[str], group: str) -> float:
        """Share of the request's tokens that some table of the group contains."""
        return len(q_tokens & self.group_tokens(group)) / len(q_tokens) if q_tokens else 0.0

    def linked(self, asset_id: str) -> frozenset[str]:
        """The table's neighbours in the join graph (foreign keys and co-usage, `neighbors`), read
        once per table: every request's feature rows ask for its candidates' neighbours twice, and
        its set selection again (the Matcher hands selection this lookup)."""
        found = self._linked.get(asset_id)
        if found is None:
            found = self._linked[asset_id] = frozenset(self.neighbors(asset_id))
        return found

    def context(self, asset_ids: Sequence[str], first: np.ndarray) -> np.ndarray:
        """The second stage's extra columns (`CONTEXT_FEATURES`) for candidates whose first-stage scores
        are `first` (same order): where each stands among the others by those scores, through its
        database and its neighbours in the join graph (`linked`: foreign keys and co-usage).
        Shape (len(asset_ids), len(CONTEXT_FEATURES))."""
        n = len(asset_ids)
        out = np.zeros((n, len(CONTEXT_FEATURES)), dtype=np.float64)
        if n == 0:
            return out
        first = np.asarray(first, dtype=np.float64)
        best = max(float(first.max()), 1e-12)
        total = float(first.sum()) or 1.0
        order = np.argsort(-first, kind="stable")
        rank = np.empty(n)
        rank[order] = np.arange(1, n + 1)
        score_of = dict(zip(asset_ids, first.tolist()))
        groups = [self.group_of(a) for a in asset_ids]
        members: dict[str, list[float]] = defaultdict(list)
        for g, value in zip(groups, first.tolist()):
            members[g].append(value)
        top_two = {g: sorted(values, reverse=True)[:2] for g, values in members.items()}
        group_sum = {g: sum(values) for g, values in members.items()}
        top = asset_ids[order[0]]
        second = asset_ids[order[1]] if n > 1 else None
        top3 = [asset_ids[j] for j in order[:3]]
        near_top = self.linked(top)
        near_second = self.linked(second) if second is not None else frozenset()
        for i, asset_id in enumerate(asset_ids):
            neighbours = self.linked(asset_id)
            scored = sorted((score_of[a] for a in neighbours if a in score_of), reverse=True)
            # the best other member of its database: the second best when it is the best itself
            best_two = top_two[groups[i]]
            other = best_two[1] if first[i] == best_two[0] and len(best_two) > 1 else best_two[0]
            if len(members[groups[i]]) == 1:
                other = 0.0
            out[i] = [
                first[i],
                first[i] / best,
                1.0 / rank[i],
                float(groups[i] == groups[order[0]]),
                float(asset_id in near_top),
                float(asset_id in near_second),
                float(asset_id not in (top, second) and asset_id in near_top and asset_id in near_second),
                float(sum(1 for a in top3 if a != asset_id and a in neighbours)),
                scored[0] / best if scored else 0.0,
                sum(scored[:2]) / best,
                other / best,
                group_sum[groups[i]] / total,
            ]
        return out

    def matrix(
        self,
        query: str,
        candidates: Sequence[Candidate],
        stored: Mapping[str, Mapping[str, float]] | None = None,
    ) -> np.ndarray:
        """Feature rows for `candidates` (same order), shape (len(candidates), len(feature_names)).

        `stored` gives the feature provider's values per asset id (training passes point-in-time
        values as of the requirement's time); without it they are read online (matching)."""
        n = len(candidates)
        names = self.feature_names
        out = np.zeros((n, len(names)), dtype=np.float64)
        if n == 0:
            return out
        q_tokens = word_tokens(query)
        path_max = {
            p: max((abs(c.path_scores[p]) for c in candidates if p in c.path_scores), default=0.0)
            for p in self.paths
        }
        rrf_max = max(c.rrf for c in candidates) or 1.0
        statics = [self._static_of(c.asset_id) for c in candidates]
        # group (database) aggregates over the candidates: each group's RRF values, best first
        members: dict[str, list[float]] = defaultdict(list)
        for cand, info in zip(candidates, statics):
            members[info.group].append(cand.rrf)
        totals = {g: sum(rrfs) for g, rrfs in members.items()}  # summed in candidate order
        for rrfs in members.values():
            rrfs.sort(reverse=True)
        groups = [info.group for info in statics]
        group_order = rank_groups([c.rrf for c in candidates], groups)
        # the same ranking of groups from the metadata paths alone: where it disagrees with the one
        # above, past requests pull towards another database than the tables' own words do (a new
        # database whose namesakes elsewhere have a history) — the model learns whom to believe
        # from the cold-history copies it is fitted on (`matching.fit`)
        metadata = [metadata_rrf(c) for c in candidates]
        metadata_max = max(metadata) or 1.0
        metadata_order = rank_groups(metadata, groups)
        # how much of the request the candidate's whole database covers: a question about singers
        # *and* concerts belongs to the database that has both, though its `singer` table alone
        # reads like every other database's `singer` (most wrong top tables on a union of
        # databases are another database's, many of them namesakes)
        group_cover = {g: self._coverage(q_tokens, g) for g in members}
        best_cover = max(group_cover.values())
        rrf_by_id = {c.asset_id: c.rrf for c in candidates}
        # how close each table's nearest past request is, against the closest of the list's: a
        # near-paraphrase of a past request votes for its tables with the same reciprocal-rank weight
        # as a loosely related one, and a popular table collects votes from both kinds
        nearest_max = max(c.nearest for c in candidates)
        nearest_words_max = max(c.nearest_words for c in candidates)
        fp_values: Mapping[str, Mapping[str, float]] = stored or {}
        if self.feature_provider is not None and stored is None:
            fp_values = self.feature_provider.online([c.asset_id for c in candidates])

        for i, (cand, info, meta) in enumerate(zip(candidates, statics, metadata)):
            row: list[float] = []
            for p in self.paths:
                present = p in cand.path_ranks
                score = cand.path_scores.get(p, 0.0)
                row += [
                    score,
                    score / path_max[p] if present and path_max[p] > 0 else 0.0,
                    1.0 / cand.path_ranks[p] if present else 0.0,
                    float(present),
                ]
            overlap_name = (
                len(q_tokens & info.name_tokens) / len(info.name_tokens) if info.name_tokens else 0.0
            )
            overlap_cols = len(q_tokens & info.column_tokens) / len(q_tokens) if q_tokens else 0.0
            coverage = (
                len(q_tokens & (info.name_tokens | info.column_tokens)) / len(q_tokens) if q_tokens else 0.0
            )
            in_group = members[info.group]
            neigh = [rrf_by_id[a] for a in self.linked(cand.asset_id) if a in rrf_by_id]
            row += [
                cand.rrf,
                cand.rrf / rrf_max,
                float(len(cand.path_ranks)),
                math.log1p(info.n_columns),
                overlap_name,
                overlap_cols,
                coverage,
                float(len(self.linked(cand.asset_id))),
                float(group_order[info.group]),
                float(group_order[info.group] == 1),
                in_group[0] / rrf_max,
                totals[info.group] / rrf_max,
                float(len(in_group)),
                float(in_group.index(cand.rrf) + 1),
                (max(neigh) / rrf_max) if neigh else 0.0,
                float(len(neigh)),
                meta / metadata_max,
                float(metadata_order[info.group]),
                float(metadata_order[info.group] == 1),
                group_cover[info.group],
                group_cover[info.group] - best_cover,
                float(group_cover[info.group] >= best_cover),
                cand.nearest,
                cand.nearest - nearest_max,
                cand.nearest_words,
                cand.nearest_words - nearest_words_max,
            ]
            if self.feature_provider is not None:
                values = fp_values.get(cand.asset_id, {})
                row += [float(values.get(n, 0.0)) for n in self.feature_provider.feature_names]
            out[i] = row
        return out


# ---- learned fusion -------------------------------------------------------------------------


@dataclass
class TrainingGroup:
    """One labelled requirement's candidates: the feature rows and which rows are gold tables."""

    requirement_id: str
    group: str  # cross-validation group (the requirement's database/business; see `cv_groups_of`)
    features: np.ndarray
    labels: np.ndarray  # 1 = gold table
    asset_ids: list[str]
    n_gold: int  # gold tables of the requirement, recalled or not
    text: str = ""  # the requirement (copies of one text share a cross-validation group by request)
    query: str = ""  # the query and tables that answered it (`text.same_query_key`): paraphrases share it


def _model_grid(seed: int) -> dict[str, Any]:
    """The candidate model families and settings cross-validation chooses from."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # a small grid on purpose: every entry costs one fit per fold on ~100 rows per requirement.
    # Simplest first: a near-tie goes to the earlier entry (`simplest_of_the_best`).
    grid: dict[str, Any] = {
        "logreg_C1.0": make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    }
    for lr, leaves in ((0.1, 15), (0.05, 31)):
        grid[f"hgb_lr{lr}_leaves{leaves}"] = HistGradientBoostingClassifier(
            learning_rate=lr, max_leaf_nodes=leaves, max_iter=200, l2_regularization=1.0, random_state=seed
        )
    return grid


def group_ranking_score(groups: Sequence[TrainingGroup], scores: Sequence[np.ndarray], k: int = 5) -> float:
    """Mean all-gold@k (+ a small MRR term to break ties) of per-requirement score vectors."""
    total = 0.0
    for grp, sc in zip(groups, scores):
        order = np.argsort(-sc, kind="stable")
        top = {grp.asset_ids[j] for j in order[:k] if grp.labels[j] == 1}
        all_gold = float(len(top) == grp.n_gold)
        first = next((pos for pos, j in enumerate(order, start=1) if grp.labels[j] == 1), None)
        total += all_gold + 0.01 * (1.0 / first if first else 0.0)
    return total / max(len(groups), 1)


def simplest_of_the_best(scores: Mapping[str, float], n_requirements: int) -> str:
    """The first model, in grid order (simplest first), whose CV score is within half a requirement
    of the best (0.5 / n): a smaller difference can only be the MRR tie-break term or one
    requirement's first gold table moving one rank, and the choice would follow whichever way tiny
    upstream differences fall. (A demo build scored its two gradient-boosting models 0.9616568 and
    0.9616539 of 1,685 requirements; the two answer one game's held-out requirements with coarse set
    F1 0.83 and 0.86.)"""
    if not scores:
        raise ValueError("no model was cross-validated")
    best = max(scores.values())
    tolerance = 0.5 / max(n_requirements, 1)
    return next(name for name, score in scores.items() if score >= best - tolerance)


@dataclass
class CVReport:
    """What cross-validation chose and why (logged to MLflow and saved with the model)."""

    scores: dict[str, float]
    chosen: str
    n_requirements: int
    n_rows: int
    folds: int
    second_scores: dict[str, float] = field(default_factory=dict)
    """The second stage's candidates' scores (empty when none was cross-validated)."""
    second_chosen: str | None = None
    """The second stage kept, None when one stage ranked as well (or none was tried)."""


class LearnedFusion:
    """A fitted classifier over `FeatureBuilder` features; its probability is the coarse score."""

    name = "learned"

    def __init__(
        self,
        model: Any,
        feature_names: list[str],
        builder: FeatureBuilder | None = None,
        cv: CVReport | None = None,
        trained_on: str = "labelled",
        second: Any | None = None,
    ) -> None:
        self.model = model
        """The fitted scikit-learn model, or its numpy predictor when loaded from one (both have
        `predict_proba`)."""
        self.second = second
        """The second stage (same kinds as `model`) over `feature_names` + `CONTEXT_FEATURES`, or None."""
        self.feature_names = feature_names
        self.builder = builder
        self.cv = cv
        self.trained_on = trained_on
        """What it was fitted on: "labelled", "synthetic" (metadata only) or "blended" (both)."""

    def bind(self, builder: FeatureBuilder) -> LearnedFusion:
        """Attach the feature builder of the index in use; its columns must match the trained ones."""
        if builder.feature_names != self.feature_names:
            missing = sorted(set(self.feature_names) - set(builder.feature_names))
            extra = sorted(set(builder.feature_names) - set(self.feature_names))
            raise ValueError(
                f"coarse model was trained on other features (missing now: {missing}, new: {extra}); "
                "refit it (`assetmatch index build` fits it again)"
            )
        self.builder = builder
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The first stage's probabilities of `features` rows."""
        if features.shape[0] == 0:
            return np.zeros(0)
        return np.asarray(self.model.predict_proba(features)[:, 1], dtype=np.float64)

    def scores(self, features: np.ndarray, asset_ids: Sequence[str]) -> np.ndarray:
        """The coarse scores of one requirement's candidates (`features` rows, `asset_ids` same
        order): the first stage's probabilities, then the second stage's when there is one."""
        first = self.predict(features)
        if self.second is None or features.shape[0] == 0:
            return first
        if self.builder is None:
            raise RuntimeError("the second stage needs a FeatureBuilder: call bind(builder) first")
        stacked = np.hstack([features, self.builder.context(asset_ids, first)])
        return np.asarray(self.second.predict_proba(stacked)[:, 1], dtype=np.float64)

    def rank(self, query: str, candidates: Sequence[Candidate]) -> list[Candidate]:
        if self.builder is None:
            raise RuntimeError("LearnedFusion.rank needs a FeatureBuilder: call bind(builder) first")
        features = self.builder.matrix(query, candidates)
        probs = self.scores(features, [c.asset_id for c in candidates])
        for cand, prob in zip(candidates, probs):
            cand.score = float(prob)
        return sort_candidates(candidates)

    def save(self, path: str | Path) -> Path:
        """The model with joblib (the source of truth), and beside it its numpy predictor
        (`predictor_path`) when the model family has one, which `load` reads without scikit-learn."""
        import joblib

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        payload = {
            "model": self.model,
            "feature_names": self.feature_names,
            "cv": self.cv,
            "trained_on": self.trained_on,
            "second": self.second,
        }
        from assetmatch.matching.predictor import file_sha256

        joblib.dump(payload, tmp)
        digest = file_sha256(tmp)
        tmp.replace(target)  # atomic: a crash never leaves a half-written model
        # written after the model and stamped with its hash: a crash in between leaves a stale
        # predictor, which `load` ignores
        self._write_predictor(target, digest)
        return target

    @staticmethod
    def predictor_path(path: str | Path) -> Path:
        """Where the numpy predictor of the model saved at `path` lives (`coarse.joblib` -> `coarse.npz`)."""
        return Path(path).with_suffix(".npz")

    def _write_predictor(self, target: Path, source_sha256: str) -> bool:
        from assetmatch.matching.predictor import write_predictor

        cv = None
        if self.cv is not None:
            cv = {
                "scores": self.cv.scores,
                "chosen": self.cv.chosen,
                "n_requirements": self.cv.n_requirements,
                "n_rows": self.cv.n_rows,
                "folds": self.cv.folds,
                "second_scores": self.cv.second_scores,
                "second_chosen": self.cv.second_chosen,
            }
        meta = {"feature_names": self.feature_names, "cv": cv, "trained_on": self.trained_on}
        return write_predictor(self.predictor_path(target), self.model, source_sha256, meta, self.second)

    @classmethod
    def load(cls, path: str | Path) -> LearnedFusion:
        """The saved model. Its numpy predictor is used when it was written for this very file
        (same SHA-256): no scikit-learn import; else the joblib model, and the predictor is
        written again for the next load (best effort: a read-only folder only means joblib again)."""
        from assetmatch.matching.predictor import read_predictor

        source = Path(path)
        found = read_predictor(cls.predictor_path(source), source)
        if found is not None:
            predictor, second, header = found
            cv = header.get("cv")
            return cls(
                predictor,
                list(header["feature_names"]),
                cv=CVReport(**cv) if cv is not None else None,
                trained_on=str(header.get("trained_on", "labelled")),
                second=second,
            )
        import io

        import joblib

        from assetmatch.matching.predictor import bytes_sha256

        raw = source.read_bytes()  # hashed and unpickled from the same bytes
        payload = joblib.load(io.BytesIO(raw))
        fusion = cls(
            payload["model"],
            list(payload["feature_names"]),
            cv=payload.get("cv"),
            trained_on=payload.get("trained_on", "labelled"),
            second=payload.get("second"),
        )
        try:
            fusion._write_predictor(source, bytes_sha256(raw))
        except OSError as exc:
            log.debug("numpy predictor of %s not written: %s", source, exc)
        return fusion


def fit_learned_fusion(
    groups: Sequence[TrainingGroup],
    feature_names: list[str],
    folds: int = 4,
    seed: int = 0,
    grid: Mapping[str, Any] | None = None,
    context: Callable[[Sequence[str], np.ndarray], np.ndarray] | None = None,
) -> tuple[LearnedFusion, list[np.ndarray]]:
    """Choose a model by grouped k-fold CV on training requirements, refit it on all of them.

    Folds are grouped by the requirement's database, so the CV score measures what the benchmark's dev
    split asks for (databases never seen in training). The choice maximises mean all-gold@5.

    With `context` (`FeatureBuilder.context`), a second stage is cross-validated on the same folds
    over each requirement's features plus the context of the chosen first stage's out-of-fold scores
    (stacking: the second stage learns from first-stage scores of requirements the first stage did
    not see, as it meets them in serving), and kept when its CV score beats the first stage's by more
    than half a requirement (`simplest_of_the_best`: one stage is the simpler model).

    Returns the fitted ranker and the out-of-fold scores of what was kept, one array per input group
    in input order (empty for a requirement with no candidates), which set selection is calibrated on
    (in-sample probabilities would be over-confident).
    """
    from sklearn.model_selection import GroupKFold

    usable = [g for g in groups if len(g.labels)]
    if not usable:
        raise ValueError("no training requirements with recalled candidates: cannot fit the coarse model")
    labels_all = np.concatenate([g.labels for g in usable])
    if labels_all.min() == labels_all.max():
        raise ValueError("training candidates are all gold or all non-gold: cannot fit the coarse model")
    models = dict(grid) if grid is not None else _model_grid(seed)
    group_idx = np.arange(len(usable))
    cv_groups = cv_groups_of(usable)
    n_groups = len(set(cv_groups))
    if n_groups >= 2:
        splits = list(GroupKFold(n_splits=min(folds, n_groups)).split(group_idx, groups=cv_groups))
    else:  # one requirement (or one text): nothing to group the folds by
        splits = [(group_idx[: len(usable) // 2], group_idx[len(usable) // 2 :])]

    with _threads_for(sum(len(g.labels) for g in usable)):
        scores, oof = _cross_validate(usable, models, splits)
        chosen = simplest_of_the_best(scores, len(usable))
        final = _fit_all(models[chosen], usable, labels_all)
        report = CVReport(scores, chosen, len(usable), int(labels_all.size), len(splits))
        kept = oof[chosen]
        second = None
        if context is not None:
            stacked = _stacked(usable, kept, context)
            second_scores, second_oof = _cross_validate(stacked, models, splits)
            report.second_scores = second_scores
            candidates = {"one stage": scores[chosen], **second_scores}
            pick = simplest_of_the_best(candidates, len(usable))
            if pick != "one stage":
                report.second_chosen = pick
                second = _fit_all(models[pick], stacked, labels_all)
                kept = second_oof[pick]
    by_id = {g.requirement_id: p for g, p in zip(usable, kept)}
    aligned = [by_id.get(g.requirement_id, np.zeros(len(g.labels))) for g in groups]
    return LearnedFusion(final, feature_names, cv=report, second=second), aligned


def cv_groups_of(groups: Sequence[TrainingGroup]) -> list[str]:
    """Cross-validation groups: the requirements' databases when there are at least two, else the
    requirements themselves (copies of one text together, and the paraphrases of one query).

    With one database (a single-warehouse business, or businesses whose databases share one name)
    there is no database to hold out; every requirement must still be scored by a model that never
    saw it, because those out-of-fold lists are what the fine rankers train and are judged on.
    """
    databases = [g.group for g in groups]
    if len(set(databases)) >= 2:
        return databases
    return request_groups_of(groups)


def request_groups_of(groups: Sequence[TrainingGroup]) -> list[str]:
    """Each requirement's request: copies of one text together, and the paraphrases of one query."""
    return [g.query or same_request_key(g.text) or g.requirement_id for g in groups]


def out_of_fold_by_request(
    groups: Sequence[TrainingGroup],
    fusion: LearnedFusion,
    context: Callable[[Sequence[str], np.ndarray], np.ndarray] | None = None,
    folds: int = 4,
) -> list[np.ndarray] | None:
    """The kept model's scores of each requirement, refitted (its first stage, then its second stage
    on the first's out-of-fold scores, as `fit_learned_fusion` stacks them) on folds that hold out
    *requests*, not databases: the lists a request of a database the coarse model learned gets in
    serving, which are what a business's fine ranker meets (it is only asked about the databases it
    learned). The database-grouped lists of `fit_learned_fusion` are those of a database never seen:
    on 844 Spider `train` requirements the coarse answer from them scored set F1 0.723 and
    all-gold@3 0.833, against 0.759 / 0.880 for 300 `test` requests answered by the fitted model.

    One array per input group in input order (empty for a requirement with no candidates); None
    when the model's own cross-validation was already grouped by request (one database: its
    out-of-fold scores are these) or there are fewer than two requests.
    """
    from sklearn.model_selection import GroupKFold

    if fusion.second is not None and context is None:
        raise ValueError("the coarse model has a second stage: its context features are needed to refit it")
    usable = [g for g in groups if len(g.labels)]
    requests = request_groups_of(usable)
    n_requests = len(set(requests))
    if n_requests < 2 or cv_groups_of(usable) == requests:
        return None
    splits = list(GroupKFold(n_splits=min(folds, n_requests)).split(np.arange(len(usable)), groups=requests))
    with _threads_for(sum(len(g.labels) for g in usable)):
        kept = _out_of_fold(usable, fusion.model, splits)
        if fusion.second is not None and context is not None:
            kept = _out_of_fold(_stacked(usable, kept, context), fusion.second, splits)
    by_id = {g.requirement_id: p for g, p in zip(usable, kept)}
    return [by_id.get(g.requirement_id, np.zeros(len(g.labels))) for g in groups]


@contextmanager
def _threads_for(n_rows: int) -> Iterator[None]:
    """One OpenMP thread for a small fit: gradient boosting's per-iteration thread synchronisation
    costs more than it saves below ~100k rows, and on a busy machine spinning threads starve each
    other (a 65-requirement fit measured 14 s on one thread against 560 s on two, beside other jobs)."""
    from threadpoolctl import threadpool_limits

    if n_rows >= 100_000:
        yield
        return
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _cross_validate(
    usable: Sequence[TrainingGroup],
    models: Mapping[str, Any],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Each model's CV score (`group_ranking_score`) and out-of-fold scores, one array per group."""
    scores: dict[str, float] = {}
    oof: dict[str, list[np.ndarray]] = {}
    for name, proto in models.items():
        preds = _out_of_fold(usable, proto, splits)
        scores[name] = group_ranking_score(usable, preds)
        oof[name] = preds
    return scores, oof


def _stacked(
    usable: Sequence[TrainingGroup],
    first: Sequence[np.ndarray],
    context: Callable[[Sequence[str], np.ndarray], np.ndarray],
) -> list[TrainingGroup]:
    """The second stage's rows: each group's features plus the context of its first-stage scores."""
    return [
        dataclasses.replace(g, features=np.hstack([g.features, context(g.asset_ids, p)]))
        for g, p in zip(usable, first)
    ]


def _out_of_fold(
    usable: Sequence[TrainingGroup], proto: Any, splits: Sequence[tuple[np.ndarray, np.ndarray]]
) -> list[np.ndarray]:
    """Each group's scores by a copy of `proto` fitted on the other folds' groups. The folds are
    fitted side by side on a mid-sized fit (`_fold_workers`), each on one thread as `_threads_for`
    runs them in-process, so the scores are those of fitting them one after the other."""
    from joblib import Parallel, delayed, parallel_config

    def training_rows(train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.vstack([usable[i].features for i in train_idx])
        return x, np.concatenate([usable[i].labels for i in train_idx])

    workers = _fold_workers(sum(len(g.labels) for g in usable), len(splits))
    with parallel_config(backend="loky", inner_max_num_threads=1):
        fitted = Parallel(n_jobs=workers)(delayed(_fit_fold)(proto, *training_rows(tr)) for tr, _ in splits)
    preds: list[np.ndarray] = [np.zeros(0)] * len(usable)
    for (_, test_idx), model in zip(splits, fitted):
        if model is None:
            continue
        # one call per fold, not per group: prediction is row by row, so the scores are the same
        scores = model.predict_proba(np.vstack([usable[i].features for i in test_idx]))[:, 1]
        ends = np.cumsum([len(usable[i].labels) for i in test_idx])
        for i, part in zip(test_idx, np.split(scores, ends[:-1])):
            preds[i] = part
    # a fold that could not be trained leaves zeros: it scores low, which is honest
    return [p if len(p) == len(g.labels) else np.zeros(len(g.labels)) for p, g in zip(preds, usable)]


def _fit_fold(proto: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """A copy of `proto` fitted on one fold's training rows; None when they hold one class only."""
    from sklearn.base import clone

    return None if y.min() == y.max() else clone(proto).fit(x, y)


def _fold_workers(n_rows: int, n_folds: int) -> int:
    """Processes to fit a cross-validation's folds in. One per core (at most one per fold) from 5k
    rows: each fold's fit is single-threaded there (`_threads_for`), so the other cores would idle
    (the demo's coarse fit on 2 cores: `assetmatch index build` 122 -> 90 s, the same scores). One
    below (starting a worker costs about a second) and from 100k rows, where OpenMP threads share
    the cores inside each fit."""
    from joblib import cpu_count

    if n_rows < 5_000 or n_rows >= 100_000:
        return 1
    return max(1, min(n_folds, cpu_count()))


def _fit_all(proto: Any, usable: Sequence[TrainingGroup], labels: np.ndarray) -> Any:
    from sklearn.base import clone

    return clone(proto).fit(np.vstack([g.features for g in usable]), labels)
