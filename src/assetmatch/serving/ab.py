"""Online A/B: sticky arm assignment, and the report that joins feedback to arms.

A user is on the challenger when `hash(business, user_id)` falls in the business's challenger
share (`settings.serving.ab_split`). The hash is sha256, so the assignment is the same in every
replica and after every restart. Without a user id the champion serves (nothing to keep sticky).

The online metric is set F1 between the tables an answer selected and the tables the caller
reports having used (`POST /v1/feedback`), averaged per arm, with a percentile-bootstrap 95%
interval for each arm and for the difference challenger - champion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assetmatch.serving.schemas import Arm

BUCKETS = 10_000


def bucket(business: str, user_id: str) -> float:
    """A stable number in [0, 1) for (business, user)."""
    digest = hashlib.sha256(f"{business}\x1f{user_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % BUCKETS) / BUCKETS


def assign_arm(business: str, user_id: str | None, challenger_share: float, has_challenger: bool) -> Arm:
    if not has_challenger or not user_id or challenger_share <= 0:
        return "champion"
    return "challenger" if bucket(business, user_id) < challenger_share else "champion"


def set_f1(returned: Iterable[str], used: Iterable[str]) -> float:
    """F1 of two sets; 1.0 when both are empty (nothing needed, nothing returned)."""
    a, b = set(returned), set(used)
    if not a and not b:
        return 1.0
    overlap = len(a & b)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(a), overlap / len(b)
    return 2 * precision * recall / (precision + recall)


@dataclass
class ArmStats:
    arm: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    model_versions: list[str] = field(default_factory=list)


@dataclass
class ABReport:
    business: str
    arms: list[ArmStats]
    diff: float | None = None  # challenger - champion
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _bootstrap_means(values: np.ndarray, rounds: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(rounds, len(values)))
    result: np.ndarray = values[idx].mean(axis=1)
    return result


def ab_report(
    rows: Sequence[Mapping[str, Any]], rounds: int = 2_000, confidence: float = 0.95, seed: int = 0
) -> list[ABReport]:
    """Per business: set-F1 mean and bootstrap CI per arm, and of the difference between arms.

    `rows` are feedback-table rows (business, arm, returned_assets, used_assets, model_version).
    """
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    by_business: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for row in rows:
        by_business.setdefault(row["business"], {}).setdefault(row["arm"] or "champion", []).append(row)
    reports = []
    for business in sorted(by_business):
        arms = by_business[business]
        stats: list[ArmStats] = []
        boots: dict[str, np.ndarray] = {}
        for arm in sorted(arms):
            scores = np.array([set_f1(r["returned_assets"] or [], r["used_assets"] or []) for r in arms[arm]])
            boot = _bootstrap_means(scores, rounds, rng)
            boots[arm] = boot
            stats.append(
                ArmStats(
                    arm=arm,
                    n=len(scores),
                    mean=float(scores.mean()),
                    ci_low=float(np.quantile(boot, alpha)),
                    ci_high=float(np.quantile(boot, 1 - alpha)),
                    model_versions=sorted({str(r.get("model_version") or "") for r in arms[arm]}),
                )
            )
        report = ABReport(business, stats)
        if "champion" in boots and "challenger" in boots:
            diff = boots["challenger"] - boots["champion"]
            means = {s.arm: s.mean for s in stats}
            report.diff = means["challenger"] - means["champion"]
            report.diff_ci_low = float(np.quantile(diff, alpha))
            report.diff_ci_high = float(np.quantile(diff, 1 - alpha))
        reports.append(report)
    return reports
