"""The A/B gate: promote a challenger ranker over the champion only when the numbers say so.

Both models rank the SAME held-out requirements; for every requirement we take the paired
difference (challenger - champion) of set F1 and of all-gold@k, and a seeded paired bootstrap
(numpy) gives a confidence interval of the mean difference. An adapter's calibration (fusion,
selection, cascade) was fitted on those held-out requirements, so the gate answers each one with
the calibration refitted on the other folds (`training.evaluate.cross_fitted`). Rules, in order:

1. latency: the challenger's p95 fine-rank latency must stay under the budget, else refuse;
2. worse: any metric whose CI lies wholly below -margin -> refuse;
3. better with confidence: some metric's CI lies wholly above 0 and none goes below -margin -> promote;
4. non-inferior and faster: every CI's lower end is above -margin and the challenger's mean
   latency is lower -> promote (not allowed for the first adapter: it must *beat* coarse-only);
5. otherwise refuse (no evidence either way).

The first adapter of a business has no champion: it is compared with coarse-only ranking.
Each decision is recorded in MLflow (version + run tags), the `promotions` Delta table and, when
run in a flow, a Prefect artifact.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from assetmatch.config import PromotionConfig, Settings
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.matching.fine import read_calibration
from assetmatch.matching.matcher import visible_businesses
from assetmatch.ranking.candidates import production_candidates
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import LoraFineRanker
from assetmatch.ranking.model import scoring_threads
from assetmatch.registry.mlflow import Registry
from assetmatch.training import evaluate as ev
from assetmatch.training import recorded as rec
from assetmatch.training.pairs import labelled_from_lake, split_holdout
from assetmatch.training.train import judge, judging_rankers, runtime_of, selection_context

Verdict = Literal["promote", "refuse"]
GATE_TAG = "gate.verdict"  # model-version tag written once the gate has judged a version


GateConfig = PromotionConfig
"""The gate's thresholds are `settings.promotion` (`config.PromotionConfig`, validated when the
config loads); this name stays for callers that build one by hand."""


@dataclass
class ArmResult:
    """One arm's per-requirement vectors on the shared held-out requirements (same order)."""

    name: str
    ids: list[str]
    f1: list[float]
    all_gold: list[float]
    latency_ms: list[float]

    @classmethod
    def from_report(cls, report: Any, k: int) -> ArmResult:
        return cls(
            report.name, list(report.ids), list(report.f1), list(report.all_gold[k]), list(report.latency_ms)
        )


@dataclass
class Interval:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{_signed(self.mean)} [{_signed(self.low)}, {_signed(self.high)}]"


def _signed(value: float) -> str:
    """Three decimals, signed; a value that is not zero but would print as ±0.000 keeps two
    significant digits ("+0.00031", "+2e-05"): a verdict "better with 95% confidence" whose interval
    reads [+0.000, ...] looks like a contradiction, while the gate compares the unrounded bound with 0."""
    return f"{value:+.2g}" if value != 0 and abs(value) < 0.0005 else f"{value:+.3f}"


@dataclass(frozen=True)
class Changed:
    """On how many requirements the challenger's set F1 differs from the baseline's, each way.

    An interval's lower end at exactly zero is read with it: an adapter that changed 3 answers of 70
    and lost none has a bootstrap whose resamples miss all 3 about 5 % of the time (e^-3), so it
    cannot pass at 95 % however right the 3 were. The count says which case a refusal is: too few
    answers changed to tell from chance, or gains and losses that cancel."""

    better: int
    worse: int

    @classmethod
    def of(cls, diffs: Sequence[float]) -> Changed:
        d = np.round(np.asarray(diffs, dtype=float), _DIGITS)
        return cls(int((d > 0).sum()), int((d < 0).sum()))

    def __str__(self) -> str:
        return f"set F1 changed on {self.better + self.worse} ({self.better} better, {self.worse} worse)"


@dataclass
class Decision:
    verdict: Verdict
    reason: str
    first_adapter: bool
    diffs: dict[str, Interval]
    champion: dict[str, float]
    challenger: dict[str, float]
    n: int
    config: PromotionConfig
    changed: Changed = Changed(0, 0)
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def brief(self) -> str:
        """The verdict and the evidence it rests on, one line ("refuse: set_f1 +0.013 [+0.000,
        +0.031], ..., set F1 changed on 3 (3 better, 0 worse)"); the reason too where the evidence is
        not all of it (a promotion, a refusal for latency)."""
        shown = evidence(self.diffs)
        because = "" if shown in self.reason else f"; {self.reason}"
        return f"{self.verdict}: {shown}, {self.changed}{because}"

    def metrics(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "changed": asdict(self.changed),
            "first_adapter": self.first_adapter,
            "diffs": {k: asdict(v) for k, v in self.diffs.items()},
            "champion": self.champion,
            "challenger": self.challenger,
            "gate": self.config.model_dump(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "verdict": self.verdict,
            "reason": self.reason,
            "metrics": self.metrics(),
        }


_DIGITS = 12  # the bootstrap's means are rounded to this many decimals (`paired_bootstrap`)


def paired_bootstrap(diffs: Sequence[float], samples: int, confidence: float, seed: int) -> Interval:
    """Mean of paired differences and its percentile bootstrap CI (resampling requirements).

    Means are rounded to `_DIGITS` decimals: a resample whose gains and losses cancel (+0.6, -0.3,
    -0.3) has a mean of zero, which floats sum to a residue of either sign (5.6e-17 / n). Left so, a
    lower end "above zero" by 1e-18 promoted an adapter on the demo whose interval was [0, +0.090].
    The differences of per-requirement metrics (ratios of small counts) are never that close to
    zero without being zero."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("paired_bootstrap: no paired requirements to compare")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(samples, d.size))
    means = np.round(d[idx].mean(axis=1), _DIGITS)
    alpha = (1 - confidence) / 2
    mean = float(np.round(d.mean(), _DIGITS))
    return Interval(mean, float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def _summary(arm: ArmResult) -> dict[str, float]:
    if not arm.ids:
        return {}
    lat = np.asarray(arm.latency_ms, dtype=float)
    return {
        "set_f1": float(np.mean(arm.f1)),
        "all_gold": float(np.mean(arm.all_gold)),
        "latency_ms_mean": float(lat.mean()) if lat.size else 0.0,
        "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else 0.0,
    }


def evidence(diffs: Mapping[str, Interval]) -> str:
    """The paired differences a verdict rests on, one line: "set_f1 -0.005 [-0.014, +0.000], ..."."""
    return ", ".join(f"{name} {iv}" for name, iv in diffs.items())


def decide(
    champion: ArmResult, challenger: ArmResult, config: PromotionConfig, first_adapter: bool = False
) -> Decision:
    """Apply the gate's rules (module docstring) to two arms evaluated on the same requirements."""
    if champion.ids != challenger.ids:
        raise ValueError(
            "decide: champion and challenger were not evaluated on the same requirements in the same order"
        )
    metric_pairs = {
        "set_f1": (champion.f1, challenger.f1),
        f"all_gold_at_{config.k}": (champion.all_gold, challenger.all_gold),
    }
    paired = {
        name: np.asarray(b, dtype=float) - np.asarray(a, dtype=float) for name, (a, b) in metric_pairs.items()
    }
    # none held out: nothing to bootstrap (min_requirements >= 1 refuses below)
    diffs = (
        {
            name: paired_bootstrap(d, config.bootstrap_samples, config.confidence, config.seed)
            for name, d in paired.items()
        }
        if champion.ids
        else {}
    )
    champ, chall = _summary(champion), _summary(challenger)
    pct = round(config.confidence * 100)
    changed = Changed.of(paired["set_f1"])

    def decision(verdict: Verdict, reason: str) -> Decision:
        return Decision(
            verdict, reason, first_adapter, diffs, champ, chall, len(champion.ids), config, changed
        )

    if len(champion.ids) < config.min_requirements:
        return decision(
            "refuse",
            f"only {len(champion.ids)} paired requirements (< {config.min_requirements}): not enough evidence",
        )
    # what a verdict below rests on; no parentheses: the demo and the CLI print a reason inside theirs
    because = f": {evidence(diffs)} on {len(champion.ids)} requirements, {changed}"
    if chall["latency_ms_p95"] > config.latency_budget_ms:
        return decision(
            "refuse",
            f"p95 latency {chall['latency_ms_p95']:.1f} ms is over the budget of {config.latency_budget_ms:.0f} ms",
        )
    worse = [n for n, iv in diffs.items() if iv.high < -config.margin]
    if worse:
        return decision("refuse", f"worse with {pct}% confidence on {', '.join(worse)}{because}")
    noninferior = all(iv.low > -config.margin for iv in diffs.values())
    better = [n for n, iv in diffs.items() if iv.low > 0]
    baseline = "coarse-only ranking" if first_adapter else "the champion"
    if better and noninferior:
        return decision(
            "promote", f"better than {baseline} with {pct}% confidence on {', '.join(better)}{because}"
        )
    if first_adapter:
        return decision(
            "refuse",
            f"the first adapter must beat coarse-only ranking with {pct}% confidence; it does not{because}",
        )
    if noninferior and chall["latency_ms_mean"] < (1 - config.min_speedup) * champ["latency_ms_mean"]:
        return decision(
            "promote",
            f"non-inferior within {config.margin} on every metric and faster "
            f"({chall['latency_ms_mean']:.1f} vs {champ['latency_ms_mean']:.1f} ms)",
        )
    if noninferior:
        return decision("refuse", "non-inferior but not faster: no reason to switch")
    return decision(
        "refuse",
        f"not better with {pct}% confidence, and not non-inferior within {config.margin}{because}",
    )


ArmName = Literal["baseline", "shared", "per_business"]


@dataclass
class Choice:
    """The gate's three-way choice for one business: keep the baseline (champion, or coarse-only),
    take the shared adapter (with this business's calibration), or the per-business adapter."""

    chosen: ArmName
    reason: str
    decisions: dict[str, Decision]


def choose_arm(
    baseline: Any, shared: Any | None, per_business: Any | None, config: PromotionConfig, first_adapter: bool
) -> Choice:
    """Each challenger faces the baseline with the unchanged rules (`decide`); when both pass, the
    per-business adapter is chosen only if it also beats the shared one with confidence — a
    business's own adapter must earn its keep over the general one. Arms are `EvalReport`s of the
    same requirements in the same order, or `ArmResult`s (None: that arm was not trained)."""
    arms = {
        name: rep if isinstance(rep, ArmResult) else ArmResult.from_report(rep, config.k)
        for name, rep in (("baseline", baseline), ("shared", shared), ("per_business", per_business))
        if rep is not None
    }
    decisions: dict[str, Decision] = {
        name: decide(arms["baseline"], arms[name], config, first_adapter)
        for name in ("shared", "per_business")
        if name in arms
    }
    passed = [name for name, d in decisions.items() if d.verdict == "promote"]
    if not passed:
        reasons = "; ".join(f"{n}: {d.reason}" for n, d in decisions.items()) or "no challenger"
        return Choice("baseline", f"keep the baseline ({reasons})", decisions)
    if passed == ["shared", "per_business"]:
        versus = decide(arms["shared"], arms["per_business"], config, first_adapter=False)
        decisions["per_business_vs_shared"] = versus
        if versus.verdict == "promote":
            return Choice("per_business", f"per-business beats shared: {versus.reason}", decisions)
        return Choice(
            "shared",
            f"both beat the baseline; per-business not better than shared ({versus.reason})",
            decisions,
        )
    chosen: ArmName = "shared" if passed == ["shared"] else "per_business"
    return Choice(chosen, decisions[chosen].reason, decisions)


def promotion_row(
    decision: Decision, business: str, model_name: str, champion_version: str, challenger_version: str
) -> dict[str, Any]:
    """The decision as a row of the `promotions` Delta table."""
    return {
        "decision_id": decision.decision_id,
        "business": business,
        "model_name": model_name,
        "champion_version": champion_version,
        "challenger_version": challenger_version,
        "verdict": decision.verdict,
        "metrics": json.dumps(decision.metrics(), sort_keys=True),
        "reason": decision.reason,
        "ts": datetime.now(UTC),
    }


def decision_markdown(
    decision: Decision, business: str, champion_version: str, challenger_version: str
) -> str:
    """A short Markdown report (the Prefect artifact and the CLI output)."""
    lines = [
        f"### {business}: challenger v{challenger_version} vs {champion_version or 'coarse-only'}",
        f"**{decision.verdict.upper()}**: {decision.reason}",
        "",
        "| metric | champion | challenger | mean diff | CI low | CI high |",
        "|---|---|---|---|---|---|",
    ]
    if decision.n == 0:  # refused before any comparison: no figures to show
        return "\n".join(lines[:2])
    for name, iv in decision.diffs.items():
        key = "set_f1" if name == "set_f1" else "all_gold"
        lines.append(
            f"| {name} | {decision.champion[key]:.3f} | {decision.challenger[key]:.3f} | "
            f"{iv.mean:+.3f} | {iv.low:+.3f} | {iv.high:+.3f} |"
        )
    lines.append(
        f"| latency ms (mean / p95) | {decision.champion['latency_ms_mean']:.1f} / {decision.champion['latency_ms_p95']:.1f} "
        f"| {decision.challenger['latency_ms_mean']:.1f} / {decision.challenger['latency_ms_p95']:.1f} | | | |"
    )
    lines.append(f"\n{decision.n} paired requirements, decision `{decision.decision_id}`.")
    return "\n".join(lines)


# ---- wiring: lake + registry ---------------------------------------------------------------------


@dataclass
class GateOutcome:
    """A decision with the versions it compared and what was done about it."""

    business: str
    decision: Decision
    champion_version: str
    challenger_version: str
    promoted: bool
    markdown: str
    chosen: str = "per_business"  # which arm won: baseline | shared | per_business
    # (version, decision) of the shared adapter against the baseline, when it was judged but is not
    # the decision above (that one is the chosen arm's, or the per-business one's when the baseline stays)
    shared: tuple[str, Decision] | None = None

    def shared_brief(self) -> str:
        """'shared v1 refuse: set_f1 ..., set F1 changed on 3 (3 better, 0 worse)', or '' (`shared`)."""
        return f"shared v{self.shared[0]} {self.shared[1].brief()}" if self.shared else ""

    def summary(self) -> str:
        """One line for a person: the verdict on the version compared, with its reason, and the
        shared adapter's evidence where it was judged too but is not the decision shown."""
        verdict = f"{self.chosen} promoted to champion" if self.promoted else "not promoted"
        line = f"v{self.challenger_version} {verdict} ({self.decision.reason})"
        return f"{line}; {self.shared_brief()}" if self.shared else line


def _record(
    settings: Settings,
    registry: Any,
    business: str,
    row: dict[str, Any],
    tag_version: str | None,
    decision: dict[str, Any] | None,
) -> None:

    if tag_version and decision is not None:
        registry.log_decision(business, tag_version, decision)
    Lake.from_settings(settings).append(T.PROMOTIONS, [row], run_id=row["decision_id"])


def evaluate_and_promote(
    settings: Settings,
    business: str,
    candidates: Any = None,
    cache_dir: str | None = None,
) -> GateOutcome:
    """Run the gate for `business`: challenger vs champion (or coarse-only) on held-out requirements.

    Held-out requirements are the labelled train requirements on the validation side of the stable
    hash split (`training.pairs.split_holdout`): no adapter trained here has seen them, and
    `test` / `dev` are never used to choose a model. Promotion moves `champion` to the challenger
    and keeps the old champion as `previous` (for `assetmatch models rollback`).
    """
    registry = Registry.from_settings(settings)
    gate = settings.promotion
    challenger = registry.version_by_alias(business, "challenger")
    if challenger is None:
        raise ValueError(f"business {business!r} has no 'challenger' version to evaluate (train one first)")
    champion = registry.version_by_alias(business, "champion")
    if champion is not None and str(champion.version) == str(challenger.version):
        raise ValueError(
            f"business {business!r}: challenger and champion are the same version {challenger.version}"
        )

    lake = Lake.from_settings(settings)
    own = {a.asset_id for a in lake.read_assets(businesses=[business])}
    assets = lake.read_assets(businesses=visible_businesses(settings, business))
    library = {a.asset_id: a for a in assets}
    root = Path(cache_dir or Path(settings.training.adapters_dir) / "registry-cache") / business
    chall_dir = registry.download_adapter(business, str(challenger.version), root / str(challenger.version))
    config = RankerConfig.load(chall_dir)
    _, held_out = split_holdout(labelled_from_lake(lake, business, own), config.validation_fraction)
    if not held_out:
        raise ValueError(f"business {business!r} has no held-out labelled requirements to compare on")
    candidates = candidates or production_candidates(settings, assets)
    ctx = selection_context(candidates)

    champ_dir = (
        registry.download_adapter(business, str(champion.version), root / str(champion.version))
        if champion is not None
        else None
    )
    # the third arm: the shared adapter calibrated for this business, when one waits for judgement
    shared = registry.version_by_alias(business, "challenger-shared")
    if shared is not None and GATE_TAG in dict(shared.tags or {}):
        shared = None
    folders = {"challenger": (chall_dir, str(challenger.version))}
    if champ_dir is not None:
        folders["champion"] = (champ_dir, str(champion.version))  # type: ignore[union-attr]
    if shared is not None:
        folders["shared"] = (
            registry.download_adapter(business, str(shared.version), root / str(shared.version)),
            str(shared.version),
        )

    @cache
    def rankers() -> list[LoraFineRanker]:
        """Bases holding every arm's adapter, run as deployed (the latency budget is about what
        serves), one per list scored at once (`lists_at_once`); loaded only when an arm has lists its
        record does not hold."""
        ranker = settings.ranker
        return judging_rankers(folders, config.base, ranker.device, config.max_length, ranker.quantize)

    def held(folder: str | Path) -> rec.Recorded:
        """What training recorded of this arm's lists, where it ran as this ranker runs it
        (`training.recorded`: the same weights, inputs, machine, precision and threads)."""
        own = RankerConfig.load(folder)
        if (own.base, own.max_length) != (config.base, config.max_length):
            return {}
        return rec.recorded(folder, runtime_of(settings.ranker.device, settings.ranker.quantize))

    def arm(name: str) -> ev.EvalReport:
        """One arm answering the held-out requirements as the Matcher would (cascade, fusion, selection).

        An adapter's calibration was fitted on these same held-out requirements, so each one is
        answered with the calibration refitted on the other folds (`cross_fitted`): the gate
        judges how the adapter does on requirements its calibration never saw."""
        if name == "coarse_only":
            judged = judge(None, library, held_out, candidates, config.candidate_k)
            return ev.report(name, [ev.coarse_ranked(j) for j in judged])
        folder = folders[name][0]
        calibration = read_calibration(folder)
        judged = judge(
            lambda: [partial(ranker.logits, name) for ranker in rankers()],
            library,
            held_out,
            candidates,
            config.candidate_k,
            calibration.fusion.coarse_offset,
            held(folder),
        )
        familiar = calibration.familiar
        return ev.report(name, ev.cross_fitted(judged, ctx, familiar, seed=gate.seed))

    with scoring_threads(settings.serving.torch_threads):  # judged on serving's threads
        base_report = arm("champion" if champion is not None else "coarse_only")
        chall_report = arm("challenger")
        shared_report = arm("shared") if shared is not None else None
    choice = choose_arm(base_report, shared_report, chall_report, gate, first_adapter=champion is None)
    chosen_mv = {"shared": shared, "per_business": challenger}.get(choice.chosen)
    decision = choice.decisions["shared" if choice.chosen == "shared" else "per_business"]
    champ_v = str(champion.version) if champion is not None else ""
    chall_v = str(chosen_mv.version) if chosen_mv is not None else str(challenger.version)
    promoted = chosen_mv is not None
    if promoted:
        if champion is not None:
            registry.set_alias(business, "previous", champ_v)
        registry.set_alias(business, "champion", chall_v)
        registry.delete_alias(business, "challenger")
        if shared is not None:
            registry.delete_alias(business, "challenger-shared")
    # the arm not chosen is judged too (refused, with the choice's reason): it never waits again
    other = {"shared": challenger, "per_business": shared}.get(choice.chosen, shared)
    if other is not None and str(other.version) != chall_v:
        arm_name = "shared" if other is shared else "per_business"
        registry.log_decision(
            business,
            str(other.version),
            {
                **choice.decisions[arm_name].to_dict(),
                "verdict": "refuse",
                "reason": f"not chosen: {choice.reason}",
            },
        )
    _record(
        settings,
        registry,
        business,
        promotion_row(decision, business, registry.model_name(business), champ_v, chall_v),
        chall_v,
        decision.to_dict(),
    )
    markdown = decision_markdown(decision, business, champ_v, chall_v)
    shared_arm = None  # the shared adapter's evidence, where it is not `decision`
    if shared is not None:
        markdown += f"\n\n**Three-way choice**: {choice.chosen} — {choice.reason}"
        if choice.chosen != "shared":
            shared_arm = (str(shared.version), choice.decisions["shared"])
    return GateOutcome(business, decision, champ_v, chall_v, promoted, markdown, choice.chosen, shared_arm)


def manual_alias_change(
    settings: Settings,
    business: str,
    version: str | None,
    action: Literal["promote", "rollback"],
    reason: str,
) -> str:
    """Promote a given version, or roll back to `previous`, by hand; recorded like a gate decision.

    Returns the version that is champion afterwards.
    """

    registry = Registry.from_settings(settings)
    champion = registry.version_by_alias(business, "champion")
    champ_v = str(champion.version) if champion is not None else ""
    if action == "rollback":
        previous = registry.version_by_alias(business, "previous")
        if previous is None:
            raise ValueError(f"business {business!r} has no 'previous' version to roll back to")
        target = str(previous.version)
    else:
        if not version:
            raise ValueError("promote: a version is required")
        known = {v.version for v in registry.versions(business)}
        if version not in known:
            raise ValueError(
                f"business {business!r} has no version {version} (known: {sorted(known, key=int)})"
            )
        target = version
    if champ_v == target:
        raise ValueError(f"version {target} is already the champion of {business!r}")
    if champ_v:
        registry.set_alias(business, "previous", champ_v)
    registry.set_alias(business, "champion", target)
    why = reason or f"manual {action}"
    row: dict[str, Any] = {
        "decision_id": uuid.uuid4().hex,
        "business": business,
        "model_name": registry.model_name(business),
        "champion_version": champ_v,
        "challenger_version": target,
        "verdict": f"manual-{action}",
        "metrics": "{}",
        "reason": why,
        "ts": datetime.now(UTC),
    }
    _record(settings, registry, business, row, None, None)
    registry.tag_version(business, target, {"gate.verdict": f"manual-{action}", "gate.reason": why})
    return target
