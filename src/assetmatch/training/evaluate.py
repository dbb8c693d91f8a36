"""Evaluation of a ranker on labelled requirements: ranked-list and selected-set metrics.

Per requirement (kept as vectors, so the A/B gate can pair them): all-gold@k (1 when every gold
table is in the top k), set F1 and set exact-match of the selected set, reciprocal rank, and the
fine-ranking latency. Coarse-only ranking (the candidate order, no fine ranker) is evaluated the
same way and is the baseline the first adapter must beat.

Set selection: the top table always; any other table whose fine probability reaches the
business threshold. The threshold is calibrated on validation data (`calibrate_threshold`);
coarse-only selects the top n, with n calibrated the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from assetmatch.training.pairs import Candidates, LabelledRequirement

Scorer = Callable[[str, str, list[str]], list[float]]
"""scorer(business, requirement_text, asset_ids in coarse order) -> one fine probability per asset."""

KS = (1, 3, 5)


def set_f1(selected: Iterable[str], gold: Iterable[str]) -> float:
    s, g = set(selected), set(gold)
    if not s or not g:
        return 0.0
    tp = len(s & g)
    return 0.0 if tp == 0 else 2 * tp / (len(s) + len(g))


def select_by_threshold(ranked: Sequence[str], probs: Sequence[float], threshold: float) -> list[str]:
    """Top-1 always, then every table whose probability reaches `threshold`, in rank order."""
    if not ranked:
        return []
    return [ranked[0]] + [a for a, p in zip(ranked[1:], probs[1:]) if p >= threshold]


@dataclass
class Ranked:
    """One requirement's ranked candidates (best first) with fine probabilities (None: coarse only)."""

    requirement: LabelledRequirement
    ranked: list[str]
    probs: list[float] | None
    latency_ms: float


@dataclass
class EvalReport:
    """Per-requirement vectors and their means; `to_dict` is what goes to MLflow."""

    name: str
    ids: list[str]
    f1: list[float]
    exact: list[float]
    all_gold: dict[int, list[float]]
    rr: list[float]
    latency_ms: list[float]
    threshold: float | None = None
    top_n: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        out = {
            "set_f1": float(np.mean(self.f1)) if self.f1 else 0.0,
            "set_exact": float(np.mean(self.exact)) if self.exact else 0.0,
            "mrr": float(np.mean(self.rr)) if self.rr else 0.0,
            "latency_ms_mean": float(np.mean(self.latency_ms)) if self.latency_ms else 0.0,
            "latency_ms_p95": float(np.percentile(self.latency_ms, 95)) if self.latency_ms else 0.0,
        }
        for k, v in self.all_gold.items():
            out[f"all_gold_at_{k}"] = float(np.mean(v)) if v else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["all_gold"] = {str(k): v for k, v in self.all_gold.items()}
        data["means"] = self.means()
        return data


def rank_requirements(
    requirements: Sequence[LabelledRequirement],
    candidates: Candidates,
    candidate_k: int,
    scorer: Scorer | None,
) -> list[Ranked]:
    """Candidates for each requirement, reranked by `scorer` when given (coarse order otherwise)."""
    out: list[Ranked] = []
    for req in requirements:
        cands = candidates(req.business, req.text, candidate_k)
        if scorer is None or not cands:
            out.append(Ranked(req, list(cands), None, 0.0))
            continue
        start = time.perf_counter()
        probs = scorer(req.business, req.text, list(cands))
        out.append(reranked(req, list(cands), probs, (time.perf_counter() - start) * 1000))
    return out


def reranked(
    req: LabelledRequirement, cands: Sequence[str], probs: Sequence[float], latency_ms: float
) -> Ranked:
    """Candidates re-sorted by probability (ties keep the coarse order)."""
    order = sorted(range(len(cands)), key=lambda i: -probs[i])
    return Ranked(req, [cands[i] for i in order], [float(probs[i]) for i in order], latency_ms)


def _selected(r: Ranked, threshold: float | None, top_n: int | None) -> list[str]:
    if r.probs is not None and threshold is not None:
        return select_by_threshold(r.ranked, r.probs, threshold)
    return r.ranked[: top_n or 1]


def report(
    name: str, ranked: Sequence[Ranked], threshold: float | None = None, top_n: int | None = None
) -> EvalReport:
    rep = EvalReport(name, [], [], [], {k: [] for k in KS}, [], [], threshold, top_n)
    for r in ranked:
        gold = set(r.requirement.gold)
        sel = _selected(r, threshold, top_n)
        rep.ids.append(r.requirement.id)
        rep.f1.append(set_f1(sel, gold))
        rep.exact.append(1.0 if set(sel) == gold else 0.0)
        for k in KS:
            rep.all_gold[k].append(1.0 if gold <= set(r.ranked[:k]) else 0.0)
        first = next((i for i, a in enumerate(r.ranked) if a in gold), None)
        rep.rr.append(0.0 if first is None else 1.0 / (first + 1))
        rep.latency_ms.append(r.latency_ms)
    return rep


def calibrate_threshold(ranked: Sequence[Ranked]) -> float:
    """The probability threshold with the best mean set F1 (ties: the higher threshold)."""
    grid = np.round(np.linspace(0.05, 0.95, 19), 2)
    best, best_f1 = 0.5, -1.0
    for t in grid[::-1]:
        f1 = (
            float(np.mean([set_f1(_selected(r, float(t), None), r.requirement.gold) for r in ranked]))
            if ranked
            else 0
        )
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(t), f1
    return best


def calibrate_top_n(ranked: Sequence[Ranked], max_n: int = 4) -> int:
    """Coarse-only set size with the best mean set F1."""
    scores = {
        n: float(np.mean([set_f1(r.ranked[:n], r.requirement.gold) for r in ranked])) if ranked else 0.0
        for n in range(1, max_n + 1)
    }
    return max(scores, key=lambda n: (scores[n], -n))


def plot_reports(reports: Sequence[EvalReport], path: str) -> str:
    """Bar chart of the main metrics of several reports (saved as PNG; logged with the run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["all_gold_at_1", "all_gold_at_3", "all_gold_at_5", "set_f1", "set_exact", "mrr"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / max(1, len(reports))
    for i, rep in enumerate(reports):
        means = rep.means()
        ax.bar(
            [m + i * width for m in range(len(metrics))], [means[m] for m in metrics], width, label=rep.name
        )
    ax.set_xticks([m + width * (len(reports) - 1) / 2 for m in range(len(metrics))], metrics, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
