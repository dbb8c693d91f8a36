from __future__ import annotations

import pytest

from assetmatch.serving.ab import ab_report, assign_arm, set_f1


def test_assignment_is_sticky_and_follows_the_share() -> None:
    users = [f"user-{i}" for i in range(4000)]
    arms = [assign_arm("ga", u, 0.25, has_challenger=True) for u in users]
    assert arms == [assign_arm("ga", u, 0.25, has_challenger=True) for u in users]
    share = arms.count("challenger") / len(arms)
    assert 0.22 < share < 0.28


def test_champion_without_user_challenger_or_share() -> None:
    assert assign_arm("ga", None, 0.9, has_challenger=True) == "champion"
    assert assign_arm("ga", "u1", 0.9, has_challenger=False) == "champion"
    assert assign_arm("ga", "u1", 0.0, has_challenger=True) == "champion"
    assert assign_arm("ga", "u1", 1.0, has_challenger=True) == "challenger"


def test_set_f1() -> None:
    assert set_f1(["a", "b"], ["a", "b"]) == 1.0
    assert set_f1(["a", "b"], ["c"]) == 0.0
    assert set_f1(["a", "b"], ["a"]) == pytest.approx(2 / 3)
    assert set_f1([], []) == 1.0


def test_report_means_intervals_and_difference() -> None:
    rows = [
        {
            "business": "ga",
            "arm": "champion",
            "returned_assets": ["a", "b"],
            "used_assets": ["a"],
            "model_version": "1",
        }
        for _ in range(30)
    ] + [
        {
            "business": "ga",
            "arm": "challenger",
            "returned_assets": ["a"],
            "used_assets": ["a"],
            "model_version": "2",
        }
        for _ in range(20)
    ]
    (report,) = ab_report(rows, rounds=500)
    stats = {s.arm: s for s in report.arms}
    assert stats["champion"].n == 30 and stats["champion"].mean == pytest.approx(2 / 3)
    assert stats["challenger"].mean == 1.0 and stats["challenger"].model_versions == ["2"]
    assert report.diff == pytest.approx(1 / 3)
    assert report.diff_ci_low is not None and report.diff_ci_low <= report.diff <= (report.diff_ci_high or 0)
    assert stats["champion"].ci_low <= stats["champion"].mean <= stats["champion"].ci_high
