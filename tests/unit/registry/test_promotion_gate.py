"""The A/B gate's decisions on constructed per-requirement score vectors."""

from __future__ import annotations

import numpy as np
import pytest

from assetmatch.config import PromotionConfig
from assetmatch.registry.promotion import (
    ArmResult,
    GateOutcome,
    choose_arm,
    decide,
    decision_markdown,
    evidence,
    paired_bootstrap,
)

N = 200
GATE = PromotionConfig(
    k=3, confidence=0.95, margin=0.02, bootstrap_samples=1000, seed=1, latency_budget_ms=100.0
)


def arm(name: str, f1: np.ndarray, gold: np.ndarray, latency: float) -> ArmResult:
    ids = [f"r{i}" for i in range(N)]
    return ArmResult(name, ids, f1.tolist(), gold.tolist(), [latency] * N)


def base_vectors(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.3, 0.9, N), (rng.uniform(size=N) < 0.7).astype(float)


def test_clearly_better_challenger_is_promoted() -> None:
    f1, gold = base_vectors()
    better_gold = gold.copy()
    better_gold[:40] = 1.0  # 40 more requirements fully covered
    d = decide(
        arm("champion", f1, gold, 20), arm("challenger", np.minimum(f1 + 0.1, 1), better_gold, 25), GATE
    )
    assert d.verdict == "promote" and "better" in d.reason
    assert d.diffs["set_f1"].low > 0
    # a promotion says what it rests on, as a refusal does
    assert (
        f"set_f1 {d.diffs['set_f1']}" in d.reason and f" on {N} requirements, set F1 changed on " in d.reason
    )


def test_clearly_worse_challenger_is_refused() -> None:
    f1, gold = base_vectors()
    d = decide(arm("champion", f1, gold, 20), arm("challenger", f1 - 0.15, gold, 5), GATE)
    assert d.verdict == "refuse" and "worse" in d.reason
    assert d.diffs["set_f1"].high < 0
    assert f"set_f1 {d.diffs['set_f1'].mean:+.3f} [" in d.reason and d.reason.endswith(
        f" on {N} requirements, set F1 changed on {N} ({0} better, {N} worse)"
    )


def test_tie_is_promoted_only_when_faster_and_within_budget() -> None:
    f1, gold = base_vectors()
    champion = arm("champion", f1, gold, 40)
    faster = decide(champion, arm("challenger", f1, gold, 20), GATE)
    assert faster.verdict == "promote" and "non-inferior" in faster.reason
    slower = decide(champion, arm("challenger", f1, gold, 60), GATE)
    assert slower.verdict == "refuse" and "not faster" in slower.reason
    over_budget = decide(champion, arm("challenger", np.minimum(f1 + 0.2, 1), gold, 150), GATE)
    assert over_budget.verdict == "refuse" and "budget" in over_budget.reason


def test_first_adapter_must_beat_coarse_only() -> None:
    f1, gold = base_vectors()
    tie = decide(arm("coarse_only", f1, gold, 0), arm("challenger", f1, gold, 10), GATE, first_adapter=True)
    assert tie.verdict == "refuse" and "coarse-only" in tie.reason
    # the refusal says what it rests on: each paired difference with its interval, and how many pairs
    evidence = (
        f"it does not: set_f1 +0.000 [+0.000, +0.000], all_gold_at_{GATE.k} +0.000 [+0.000, +0.000] "
        f"on {N} requirements, set F1 changed on 0 (0 better, 0 worse)"
    )
    assert tie.reason.endswith(evidence)
    better = decide(
        arm("coarse_only", f1, gold, 0),
        arm("challenger", np.minimum(f1 + 0.1, 1), gold, 10),
        GATE,
        first_adapter=True,
    )
    assert better.verdict == "promote"


def test_small_noisy_difference_is_not_enough() -> None:
    f1, gold = base_vectors()
    rng = np.random.default_rng(5)
    noisy = np.clip(f1 + rng.normal(0, 0.3, N), 0, 1)  # no real gain, large noise: CI spans the margin
    d = decide(arm("champion", f1, gold, 20), arm("challenger", noisy, gold, 25), GATE)
    assert d.verdict == "refuse"
    iv = d.diffs["set_f1"]
    assert f"set_f1 {iv.mean:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]" in d.reason and iv.low < 0 < iv.high


def test_too_few_requirements_or_a_noise_speedup_is_not_enough() -> None:
    f1, gold = base_vectors()
    few = PromotionConfig(min_requirements=N + 1, latency_budget_ms=100.0)
    d = decide(arm("champion", f1, gold, 40), arm("challenger", np.minimum(f1 + 0.2, 1), gold, 20), few)
    assert d.verdict == "refuse" and "not enough evidence" in d.reason
    noise = decide(arm("champion", f1, gold, 40), arm("challenger", f1, gold, 39), GATE)  # 2.5% faster
    assert noise.verdict == "refuse"
    empty = ArmResult("champion", [], [], [], [])
    none = decide(empty, ArmResult("challenger", [], [], [], []), GATE, first_adapter=True)
    assert none.verdict == "refuse" and "not enough evidence" in none.reason and none.n == 0
    assert none.to_dict()["metrics"]["diffs"] == {}
    assert "not enough evidence" in decision_markdown(none, "game", "", "1")


def test_bootstrap_is_seeded_and_checks_its_input() -> None:
    diffs = np.random.default_rng(2).normal(0.05, 0.2, 300)
    a = paired_bootstrap(diffs, 500, 0.95, seed=3)
    assert a == paired_bootstrap(diffs, 500, 0.95, seed=3)
    assert a.low < a.mean < a.high
    with pytest.raises(ValueError, match="no paired"):
        paired_bootstrap([], 500, 0.95, 1)


def test_arms_must_share_requirements_and_config_is_validated() -> None:
    f1, gold = base_vectors()
    other = arm("challenger", f1, gold, 10)
    other.ids = list(reversed(other.ids))
    with pytest.raises(ValueError, match="same requirements"):
        decide(arm("champion", f1, gold, 10), other, GATE)
    with pytest.raises(ValueError, match="margin"):
        PromotionConfig(margin=-0.1)
    d = decide(arm("champion", f1, gold, 40), arm("challenger", f1, gold, 20), GATE)
    md = decision_markdown(d, "game", "3", "4")
    assert "PROMOTE" in md and "all_gold_at_3" in md and d.decision_id in md


def test_three_way_choice_per_business() -> None:
    """coarse-only vs shared vs per-business, with the unchanged rules: a challenger must beat the
    baseline, and the per-business adapter must also beat the shared one to be chosen over it."""
    f1, gold = base_vectors()
    better_gold = gold.copy()
    better_gold[:40] = 1.0
    better = np.minimum(f1 + 0.1, 1)
    best_gold = better_gold.copy()
    best_gold[40:80] = 1.0
    best = np.minimum(f1 + 0.25, 1)
    baseline = arm("coarse_only", f1, gold, 0)
    same_as_baseline = arm("shared", f1, gold, 20)
    good = arm("good", better, better_gold, 20)
    great = arm("great", best, best_gold, 20)

    choice = choose_arm(baseline, good, great, GATE, first_adapter=True)
    assert choice.chosen == "per_business" and "per_business_vs_shared" in choice.decisions
    choice = choose_arm(baseline, good, good, GATE, first_adapter=True)
    assert choice.chosen == "shared" and "not better than shared" in choice.reason
    choice = choose_arm(baseline, same_as_baseline, good, GATE, first_adapter=True)
    assert choice.chosen == "per_business" and set(choice.decisions) == {"shared", "per_business"}
    choice = choose_arm(baseline, good, same_as_baseline, GATE, first_adapter=True)
    assert choice.chosen == "shared"
    choice = choose_arm(baseline, same_as_baseline, None, GATE, first_adapter=True)
    assert choice.chosen == "baseline" and "shared:" in choice.reason
    choice = choose_arm(baseline, None, good, GATE, first_adapter=True)
    assert choice.chosen == "per_business" and set(choice.decisions) == {"per_business"}


def test_a_refusal_shows_the_shared_adapters_evidence_too() -> None:
    """Where the baseline stays, the decision reported is the per-business adapter's; the summary a
    person reads (the demo's promote step) also shows how close the shared adapter came: its
    interval and how many answers it changed. A refusal for latency says so beside the evidence."""
    f1, gold = base_vectors()
    three_better = f1.copy()
    three_better[:3] = 1.0  # 3 answers better, none worse: too few to tell from chance
    baseline = arm("coarse_only", f1, gold, 0)
    choice = choose_arm(
        baseline, arm("shared", three_better, gold, 20), arm("own", f1, gold, 20), GATE, first_adapter=True
    )
    assert choice.chosen == "baseline"
    own, shared = choice.decisions["per_business"], choice.decisions["shared"]
    outcome = GateOutcome("game", own, "", "2", False, "", choice.chosen, ("1", shared))
    line = outcome.summary()
    assert line.startswith(f"v2 not promoted ({own.reason})")
    assert line.endswith(
        f"; shared v1 refuse: {evidence(shared.diffs)}, set F1 changed on 3 (3 better, 0 worse)"
    )
    assert "set F1 changed on 0 (0 better, 0 worse)" in own.reason  # the adapter's own changed nothing

    slow = decide(baseline, arm("shared", three_better, gold, 500), GATE, first_adapter=True)
    assert slow.brief().endswith(f"; {slow.reason}") and "p95 latency" in slow.reason
    better = decide(baseline, arm("shared", np.minimum(f1 + 0.1, 1), gold, 20), GATE, first_adapter=True)
    assert better.verdict == "promote"
    promoted = GateOutcome("game", better, "", "1", True, "", "shared")  # the shared arm is the decision
    assert promoted.summary() == f"v1 shared promoted to champion ({better.reason})"


def test_a_promotion_never_reads_as_an_interval_from_zero() -> None:
    """Five of 200 requirements gain a little and none loses: the lower bound is above zero but
    below 0.0005. The reason says "better with 95% confidence" and its interval shows that bound, not
    a rounded "+0.000" that reads as no evidence; exact zeros still print as +0.000."""
    f1, gold = base_vectors()
    gained = f1.copy()
    gained[:5] += 0.06
    d = decide(arm("champion", f1, gold, 20), arm("challenger", gained, gold, 20), GATE, first_adapter=True)
    low = d.diffs["set_f1"].low
    assert d.verdict == "promote" and 0 < low < 0.0005
    assert f"set_f1 +0.002 [{low:+.2g}, " in d.reason
    assert "[+0.000," not in d.reason.split("all_gold")[0]
    assert f"all_gold_at_{GATE.k} +0.000 [+0.000, +0.000]" in d.reason


def test_gains_and_losses_that_cancel_are_no_evidence() -> None:
    """Six of 80 requirements gain, two lose (0.3, 1/3): resamples that draw a 0.6 gain with the
    0.3 loss twice have a mean of exactly zero, which floats sum to +6.9e-19. The 2.5 % quantile is
    such a resample: the interval starts at zero, so the first adapter is refused, not promoted on a
    rounding residue (as a demo build once was, at [+1.6e-18, +0.090])."""
    gains, losses = [0.5, 0.75, 0.75, 0.6, 0.75, 1 / 6], [1 / 3, 0.3]
    n = 80
    zeros = [0.0] * (n - len(gains) - len(losses))
    coarse = [0.0] * len(gains) + losses + zeros
    adapter = gains + [0.0] * len(losses) + zeros
    raw = np.asarray(adapter) - np.asarray(coarse)
    rng = np.random.default_rng(7)
    unrounded = np.quantile(raw[rng.integers(0, n, size=(2000, n))].mean(axis=1), 0.025)
    assert 0 < unrounded < 1e-15  # the residue the gate once read as "above zero"
    gate = PromotionConfig(k=3, confidence=0.95, bootstrap_samples=2000, seed=7, latency_budget_ms=100.0)
    assert paired_bootstrap(raw, 2000, 0.95, seed=7).low == 0.0
    ids, gold, ms = [f"r{i}" for i in range(n)], [1.0] * n, [20.0] * n
    d = decide(
        ArmResult("coarse_only", ids, coarse, gold, ms),
        ArmResult("challenger", ids, adapter, gold, ms),
        gate,
        True,
    )
    assert d.verdict == "refuse" and d.diffs["set_f1"].low == 0.0 and d.diffs["set_f1"].mean > 0.03


def test_a_refusal_says_how_few_answers_the_adapter_changed() -> None:
    """Three gains of 70 and no loss: the mean gain is real on those three, but a resample misses all
    three ~5 % of the time, so the lower end is exactly zero and the gate refuses. The reason and
    the stored metrics say it was three answers, all better."""
    n = 70
    ids = [f"r{i}" for i in range(n)]
    coarse = np.full(n, 0.5)
    adapter = coarse.copy()
    adapter[:3] = [1.0, 1.0, 0.8]
    d = decide(
        ArmResult("coarse_only", ids, coarse.tolist(), [1.0] * n, [0.0] * n),
        ArmResult("challenger", ids, adapter.tolist(), [1.0] * n, [10.0] * n),
        GATE,
        first_adapter=True,
    )
    assert d.verdict == "refuse" and d.diffs["set_f1"].low == 0.0 and d.diffs["set_f1"].mean > 0
    assert d.reason.endswith(f"on {n} requirements, set F1 changed on 3 (3 better, 0 worse)")
    assert d.metrics()["changed"] == {"better": 3, "worse": 0}
