"""Retrieval and set-selection metrics, as pure functions over asset ids.

Definitions (the same as ../shared/benchmarks/BASELINES.md, so numbers compare):
- Recall@k: share of the requirement's gold tables found in the top k.
- all-gold@k: 1 when every gold table is in the top k, else 0.
- reciprocal rank: 1 / rank of the first gold table (0 when none is ranked).
- set precision / recall / F1 / exact match: the selected set against the gold set.
All per-requirement functions raise ValueError on an empty gold set: such a requirement cannot be
scored, and silently counting it as 0 or 1 would bias the mean.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from assetmatch.matching.selection import SetScores as SetScores  # re-exported: defined with selection
from assetmatch.matching.selection import set_scores

KS: tuple[int, ...] = (1, 3, 5, 10, 15, 20)


def _gold(gold: Collection[str]) -> set[str]:
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("a requirement with no gold tables cannot be scored")
    return gold_set


def recall_at_k(ranked: Sequence[str], gold: Collection[str], k: int) -> float:
    """Share of gold tables among the first k ranked ids."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    gold_set = _gold(gold)
    return len(gold_set.intersection(ranked[:k])) / len(gold_set)


def all_gold_at_k(ranked: Sequence[str], gold: Collection[str], k: int) -> float:
    """1.0 when every gold table is among the first k ranked ids, else 0.0."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return float(_gold(gold).issubset(ranked[:k]))


def reciprocal_rank(ranked: Sequence[str], gold: Collection[str]) -> float:
    """1 / (1-based rank of the first gold table); 0.0 when no gold table is ranked."""
    gold_set = _gold(gold)
    for position, asset_id in enumerate(ranked, start=1):
        if asset_id in gold_set:
            return 1.0 / position
    return 0.0


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (linear interpolation, numpy's default); NaN for no values."""
    data = np.asarray(list(values), dtype=float)
    return float(np.percentile(data, q)) if data.size else float("nan")


def ranking_metrics(
    rankings: Sequence[Sequence[str]], golds: Sequence[Collection[str]], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Mean recall_at_K, all_gold_at_K (for each K) and mrr over requirements."""
    if len(rankings) != len(golds):
        raise ValueError(f"{len(rankings)} rankings but {len(golds)} gold sets")
    if not rankings:
        raise ValueError("no requirements to score")
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall_at_{k}"] = float(np.mean([recall_at_k(r, g, k) for r, g in zip(rankings, golds)]))
        out[f"all_gold_at_{k}"] = float(np.mean([all_gold_at_k(r, g, k) for r, g in zip(rankings, golds)]))
    out["mrr"] = float(np.mean([reciprocal_rank(r, g) for r, g in zip(rankings, golds)]))
    return out


def set_metrics(selections: Sequence[Collection[str]], golds: Sequence[Collection[str]]) -> dict[str, float]:
    """Mean set_precision, set_recall, set_f1, set_exact_match and the mean set size."""
    if len(selections) != len(golds):
        raise ValueError(f"{len(selections)} selections but {len(golds)} gold sets")
    if not selections:
        raise ValueError("no requirements to score")
    scores = [set_scores(s, g) for s, g in zip(selections, golds)]
    return {
        "set_precision": float(np.mean([s.precision for s in scores])),
        "set_recall": float(np.mean([s.recall for s in scores])),
        "set_f1": float(np.mean([s.f1 for s in scores])),
        "set_exact_match": float(np.mean([s.exact for s in scores])),
        "set_size_mean": float(np.mean([len(set(s)) for s in selections])),
    }


def latency_metrics(latencies_ms: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """p50 / p95 per timing series: {"x": [...]} -> {"x_p50": .., "x_p95": ..}."""
    out: dict[str, float] = {}
    for name, values in latencies_ms.items():
        out[f"{name}_p50"] = percentile(values, 50)
        out[f"{name}_p95"] = percentile(values, 95)
    return out
