"""The nightly pipeline as library functions: every stage, and why it runs or skips itself.

Order (each stage reads what the one before wrote):

1. **ingest** every configured source (always runs: an unchanged source writes no new Delta version);
2. **indexes**: build the recall indexes and fit the coarse model + set selection
   (`IndexSet.build`, `fit_matching`, `save_fit`), skipped when the published index was built from
   the lake versions of `assets`, `glossary`, `query_log` and `requirements` that are current now;
3. **features**: materialize the Feast features (`features.store.materialize`), skipped when the lake
   versions it reads (`assets`, `query_log`, `feedback`) equal those of the last materialization
   recorded in its journal and no new snapshot day is due;
4. **train**: retrain the LoRA ranker of each business whose data fingerprint changed (`plan_training`);
5. **promote**: run the A/B gate (`evaluate_and_promote`) for each business whose `challenger` has
   no gate decision yet;
6. **serve**: nothing to do here: the serving watcher loads a new champion alias or index manifest.

The decisions are pure functions over versions, manifests and journal entries (`index_decision`,
`features_decision`, `promotion_pending`), so they are tested without a lake. Failures are isolated:
one broken source (ingest) or business (train, promote) is reported in its stage's `failures` and
the others go on; a stage that fails as a whole is reported and the stages after it still run on
what is there. `run_nightly` runs everything in this process (CLI, benchmark); `flows/nightly.py`
wires the same functions into Prefect tasks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from assetmatch.config import Settings, SourceSpec
from assetmatch.features import journal_path
from assetmatch.lake import tables as T

log = logging.getLogger(__name__)

Status = Literal["ran", "skipped", "failed"]
STAGES = ("ingest", "indexes", "features", "train", "promote", "serve")
INDEX_INPUTS = (T.ASSETS, T.GLOSSARY, T.QUERY_LOG, T.REQUIREMENTS)
"""The lake tables `IndexSet.build` reads (and records in its manifest under lake.versions)."""
FEATURE_INPUTS = (T.ASSETS, T.QUERY_LOG, T.FEEDBACK)
"""The lake tables `features.build.load_inputs` reads (recorded in the materialization journal)."""
GATE_VERDICT_TAG = "gate.verdict"
"""Model-version tag `Registry.log_decision` writes once the A/B gate has judged a version."""


# ---- results -----------------------------------------------------------------------------------
@dataclass
class StageResult:
    """What one stage did: ran / skipped / failed, why, a few counts, and how long it took.

    `failures` maps a part (a source, a business, or "stage") to its error: a stage that ran with some
    failed parts has status "failed" and still lists what it did for the others in `counts`.
    """

    stage: str
    status: Status
    reason: str
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NightlyResult:
    """Every stage's result, in run order."""

    stages: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.stages)

    def stage(self, name: str) -> StageResult:
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(f"no stage {name!r} in this result (stages: {[s.stage for s in self.stages]})")

    def statuses(self) -> dict[str, Status]:
        return {s.stage: s.status for s in self.stages}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": self.seconds, "stages": [s.as_dict() for s in self.stages]}

    def markdown(self) -> str:
        """The summary shown as the nightly flow's artifact and printed by the benchmark."""
        mark = {"ran": "✅ ran", "skipped": "⏭️ skipped", "failed": "❌ failed"}
        lines = [
            f"# Nightly pipeline: {'ok' if self.ok else 'FAILED'} in {self.seconds:.1f} s",
            "",
            "| stage | status | why | counts | seconds |",
            "|---|---|---|---|---|",
        ]
        for s in self.stages:
            counts = ", ".join(f"{k}: {v}" for k, v in s.counts.items())
            reason = s.reason.replace("|", "/").replace("\n", " ")
            lines.append(f"| {s.stage} | {mark[s.status]} | {reason} | {counts} | {s.seconds:.1f} |")
        failures = [(s.stage, part, err) for s in self.stages for part, err in s.failures.items()]
        if failures:
            lines += ["", "## Failures", ""]
            lines += [f"- **{stage} / {part}**: {err}" for stage, part, err in failures]
        return "\n".join(lines)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---- pure decisions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """Whether a stage runs, and the reason shown in the summary."""

    run: bool
    reason: str


def _diff(recorded: Mapping[str, Any], current: Mapping[str, int | None], tables: Sequence[str]) -> list[str]:
    return [
        f"{t} v{recorded.get(t)} → v{current.get(t)}" for t in tables if recorded.get(t) != current.get(t)
    ]


def index_decision(
    current: Mapping[str, int | None],
    manifest: Mapping[str, Any] | None,
    *,
    model_base: str,
    fit_published: bool,
    full: bool = False,
) -> Decision:
    """Rebuild the indexes unless the published one was built from exactly the current lake versions.

    current: the lake's versions now. manifest: the published index's manifest (None: none yet).
    fit_published: the coarse model / selection file exists (a build whose fit failed is redone).
    """
    if full:
        return Decision(True, "full rebuild requested")
    if manifest is None:
        return Decision(True, "no index published yet")
    if current.get(T.ASSETS) is None:
        return Decision(True, "the lake has no assets table")
    recorded = manifest.get("lake", {}).get("versions", {})
    changed = _diff(recorded, current, INDEX_INPUTS)
    if changed:
        return Decision(True, "lake changed: " + ", ".join(changed))
    if manifest.get("model", {}).get("base") != model_base:
        return Decision(True, f"model.base changed to {model_base!r}")
    if not fit_published:
        return Decision(True, "index current but no fitted selection published")
    return Decision(False, f"index {manifest.get('id')} is current (lake versions unchanged)")


def features_decision(
    current: Mapping[str, int | None],
    last: Mapping[str, Any] | None,
    *,
    now: datetime,
    enabled: bool = True,
    full: bool = False,
) -> Decision:
    """Materialize unless the last run read the same lake versions and no new snapshot day is due.

    last: the journal's last entry (`{"at": iso time, "lake_versions": {...}, ...}`), None before the
    first run. A daily snapshot is due once a midnight UTC has passed since that run.
    """
    if not enabled:
        return Decision(False, "features disabled (feast.enabled: false)")
    if full:
        return Decision(True, "full rebuild requested")
    if last is None:
        return Decision(True, "never materialized")
    changed = _diff(last.get("lake_versions", {}), current, FEATURE_INPUTS)
    if changed:
        return Decision(True, "lake changed: " + ", ".join(changed))
    at = datetime.fromisoformat(str(last["at"]))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if now.astimezone(UTC).date() > at.astimezone(UTC).date():
        return Decision(True, f"a new daily snapshot is due (last run {at:%Y-%m-%d})")
    return Decision(False, "lake versions unchanged since the last materialization")


def promotion_pending(challenger_version: str | None, tags: Mapping[str, str] | None) -> bool:
    """A challenger waits for the gate when it exists and carries no gate verdict yet."""
    return challenger_version is not None and GATE_VERDICT_TAG not in (tags or {})


# ---- what the decisions read --------------------------------------------------------------------
def lake_versions(settings: Settings) -> dict[str, int | None]:
    from assetmatch.lake.delta import Lake

    lake = Lake.from_settings(settings)
    return {t: lake.version(t) for t in (*INDEX_INPUTS, T.FEEDBACK)}


def published_manifest(settings: Settings) -> dict[str, Any] | None:
    """The manifest of the currently published index, None when there is none."""
    from assetmatch.recall import publish

    root = Path(settings.recall.index_root)
    current = publish.current_id(root)
    path = root / current / publish.MANIFEST if current else None
    if path is None or not path.exists():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def last_materialization(settings: Settings) -> dict[str, Any] | None:
    """The last line of the features journal (None before the first materialization)."""
    path = journal_path(settings)
    if not path.exists():
        return None
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return None
    entry: dict[str, Any] = json.loads(lines[-1])
    return entry


# ---- 1. ingest ---------------------------------------------------------------------------------
def ingest_sources(settings: Settings, sources: Sequence[str] | None = None) -> list[SourceSpec]:
    from assetmatch.ingest import select_sources

    return select_sources(settings, sources)


def ingest_one(settings: Settings, spec: SourceSpec, run_id: str) -> dict[str, Any]:
    """Ingest one source; never raises: a failure comes back as a summary with status "failed"."""
    from assetmatch.ingest import IngestError, failed_summary, ingest_source

    t0 = time.perf_counter()
    try:
        return ingest_source(settings, spec, run_id).as_dict()
    except Exception as exc:  # isolated per source: the others still run
        if not isinstance(exc, IngestError):
            log.exception("source %s failed", spec.name)
        return failed_summary(spec, run_id, exc, time.perf_counter() - t0).as_dict()


def ingest_result(summaries: Sequence[Mapping[str, Any]], seconds: float) -> StageResult:
    """The ingest stage's result from its per-source summaries (`SourceSummary.as_dict()`)."""
    written = {
        t: sum(
            s["tables"][t][kind]
            for s in summaries
            if t in s["tables"]
            for kind in ("inserted", "updated", "soft_deleted", "restored")
        )
        for t in (T.ASSETS, T.QUERY_LOG, T.REQUIREMENTS, T.GLOSSARY)
    }
    failures = {s["source"]: str(s["error"]) for s in summaries if s["status"] != "ok"}
    ok = len(summaries) - len(failures)
    counts: dict[str, Any] = {
        "sources": len(summaries),
        "ok": ok,
        **{f"{t}_written": n for t, n in written.items()},
    }
    if failures:
        reason = f"{len(failures)} of {len(summaries)} source(s) failed: {', '.join(sorted(failures))}"
    elif any(written.values()):
        reason = "rows written: " + ", ".join(f"{t} {n}" for t, n in written.items() if n)
    else:
        reason = "no source changed (no new lake version)"
    return StageResult("ingest", "failed" if failures else "ran", reason, counts, seconds, failures,
                       {"sources": list(summaries)})  # fmt: skip


def ingest_stage(settings: Settings, sources: Sequence[str] | None = None) -> StageResult:
    from assetmatch.ingest import new_run_id

    t0 = time.perf_counter()
    try:
        specs = ingest_sources(settings, sources)
    except Exception as exc:
        return StageResult("ingest", "failed", _error(exc), failures={"stage": _error(exc)})
    run_id = new_run_id()
    summaries = [ingest_one(settings, spec, run_id) for spec in specs]
    return ingest_result(summaries, time.perf_counter() - t0)


# ---- 2. indexes + coarse fit --------------------------------------------------------------------
def _fit_published(settings: Settings) -> bool:
    from assetmatch.matching.matcher import SELECTION_FILE, models_dir

    return (models_dir(settings) / SELECTION_FILE).exists()


def plan_indexes(settings: Settings, full: bool = False) -> Decision:
    return index_decision(
        lake_versions(settings),
        published_manifest(settings),
        model_base=settings.model.base,
        fit_published=_fit_published(settings),
        full=full,
    )


def build_and_fit(
    settings: Settings, full: bool = False, assets_version: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Build + publish the indexes, then fit and publish the coarse model and selection (as
    `assetmatch index build` does). Returns the manifest, with the fit report under "fit"."""
    from assetmatch.evaluation.harness import fit_matching, save_fit
    from assetmatch.features import provider_for_training
    from assetmatch.lake.delta import Lake
    from assetmatch.matching.matcher import models_dir
    from assetmatch.recall.index import IndexSet

    lake = Lake.from_settings(settings)
    built = IndexSet.build(lake, settings, assets_version=assets_version, full=full, progress=progress)
    # the fit reads the requirements the index recorded, so index and fit describe the same snapshot
    version = built.manifest["lake"]["versions"].get(T.REQUIREMENTS)
    train = [r for r in lake.read_requirements(version=version, split="train") if r.gold_assets]
    fit = fit_matching(built, settings, train, feature_provider=provider_for_training(settings))
    save_fit(fit, models_dir(settings))
    return {**built.manifest, "fit": {k: v for k, v in fit.report.items() if k != "selection"}}


def index_stage(settings: Settings, full: bool = False) -> StageResult:
    t0 = time.perf_counter()
    try:
        decision = plan_indexes(settings, full)
        if not decision.run:
            return StageResult("indexes", "skipped", decision.reason, seconds=time.perf_counter() - t0)
        manifest = build_and_fit(settings, full)
    except Exception as exc:
        log.exception("index build failed")
        return StageResult("indexes", "failed", _error(exc), seconds=time.perf_counter() - t0,
                           failures={"stage": _error(exc)})  # fmt: skip
    return index_result(decision, manifest, time.perf_counter() - t0)


def index_result(decision: Decision, manifest: Mapping[str, Any], seconds: float) -> StageResult:
    counts = {k: manifest["counts"][k] for k in ("assets", "embedded_assets", "reused_assets")}
    counts["fit_requirements"] = manifest.get("fit", {}).get("n_train_requirements", 0)
    reason = f"{decision.reason}; published index {manifest['id']}"
    return StageResult("indexes", "ran", reason, counts, seconds, details={"manifest": dict(manifest)})


# ---- 3. features ---------------------------------------------------------------------------------
def plan_features(settings: Settings, full: bool = False, now: datetime | None = None) -> Decision:
    return features_decision(
        lake_versions(settings),
        last_materialization(settings),
        now=now or datetime.now(UTC),
        enabled=settings.feast.enabled,
        full=full,
    )


def materialize_features(
    settings: Settings, full: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    from assetmatch.features.store import materialize

    return materialize(settings, full=full, now=now).as_dict()


def features_stage(settings: Settings, full: bool = False, now: datetime | None = None) -> StageResult:
    t0 = time.perf_counter()
    try:
        decision = plan_features(settings, full, now)
        if not decision.run:
            return StageResult("features", "skipped", decision.reason, seconds=time.perf_counter() - t0)
        report = materialize_features(settings, full, now)
    except Exception as exc:
        log.exception("feature materialization failed")
        return StageResult("features", "failed", _error(exc), seconds=time.perf_counter() - t0,
                           failures={"stage": _error(exc)})  # fmt: skip
    return features_result(decision, report, time.perf_counter() - t0)


def features_result(decision: Decision, report: Mapping[str, Any], seconds: float) -> StageResult:
    counts = {k: report[k] for k in ("snapshots", "asset_rows", "pair_rows")}
    return StageResult("features", "ran", decision.reason, counts, seconds, details={"report": dict(report)})


# ---- 4. train --------------------------------------------------------------------------------------
@dataclass
class TrainPlan:
    """Who retrains (`todo`) and why the others do not (`kept`: business -> reason)."""

    todo: list[str]
    kept: dict[str, str]


def plan_train(settings: Settings, businesses: Sequence[str] | None = None, force: bool = False) -> TrainPlan:
    from assetmatch.training.train import plan_training

    todo: list[str] = []
    kept: dict[str, str] = {}
    for plan in plan_training(settings, list(businesses) if businesses else None):
        if plan.labelled == 0:
            kept[plan.business] = "no labelled requirements"
        elif plan.changed or force:
            todo.append(plan.business)
        else:
            kept[plan.business] = f"data unchanged (fingerprint {plan.fingerprint[:12]})"
    return TrainPlan(todo, kept)


def train_one(settings: Settings, business: str) -> dict[str, Any]:
    """Train one business's adapter and register it as `challenger` (raises on failure)."""
    from assetmatch.training.train import run_training

    manifest = published_manifest(settings)
    result, version = run_training(settings, business, index_manifest=str(manifest["id"]) if manifest else "")
    return {"business": business, "version": version, "steps": result.fit.steps}


def outcome_result(
    stage: str,
    outcomes: Mapping[str, Mapping[str, Any] | BaseException],
    kept: Mapping[str, str],
    seconds: float,
    verb: str,
) -> StageResult:
    """A per-business stage's result: outcomes (business -> result or the exception it raised)."""
    done = {b: dict(o) for b, o in outcomes.items() if not isinstance(o, BaseException)}
    failures = {b: _error(o) for b, o in outcomes.items() if isinstance(o, BaseException)}
    counts = {verb: len(done), "failed": len(failures), "unchanged": len(kept)}
    parts = []
    if done:
        parts.append(f"{verb}: {', '.join(sorted(done))}")
    if failures:
        parts.append(f"failed: {', '.join(sorted(failures))}")
    if not outcomes:
        parts.append(
            "nothing to do: " + ("; ".join(f"{b}: {r}" for b, r in sorted(kept.items())) or "no business")
        )
    status: Status = "failed" if failures else ("ran" if done else "skipped")
    return StageResult(stage, status, "; ".join(parts), counts, seconds, failures,
                       {"outcomes": done, "kept": dict(kept)})  # fmt: skip


def _each(
    businesses: Sequence[str], fn: Callable[[str], dict[str, Any]]
) -> dict[str, dict[str, Any] | BaseException]:
    out: dict[str, dict[str, Any] | BaseException] = {}
    for business in businesses:
        try:
            out[business] = fn(business)
        except Exception as exc:  # isolated per business: the others still run
            log.exception("%s failed", business)
            out[business] = exc
    return out


def train_stage(
    settings: Settings, businesses: Sequence[str] | None = None, force: bool = False
) -> StageResult:
    t0 = time.perf_counter()
    try:
        plan = plan_train(settings, businesses, force)
    except Exception as exc:
        return StageResult("train", "failed", _error(exc), failures={"stage": _error(exc)})
    outcomes = _each(plan.todo, lambda b: train_one(settings, b))
    return outcome_result("train", outcomes, plan.kept, time.perf_counter() - t0, "trained")


# ---- 5. promote -------------------------------------------------------------------------------------
def plan_promotion(settings: Settings, businesses: Sequence[str] | None = None) -> TrainPlan:
    """Businesses whose `challenger` has no gate verdict yet (`todo`), and why the others wait."""
    from assetmatch.registry.mlflow import Registry

    registry = Registry.from_settings(settings)
    names = list(businesses) if businesses else (settings.business_names() or registry.businesses())
    todo: list[str] = []
    kept: dict[str, str] = {}
    for business in names:
        challenger = registry.version_by_alias(business, "challenger")
        version = str(challenger.version) if challenger is not None else None
        if promotion_pending(version, dict(challenger.tags or {}) if challenger is not None else None):
            todo.append(business)
        else:
            kept[business] = "no challenger" if version is None else f"challenger v{version} already judged"
    return TrainPlan(todo, kept)


def promote_one(settings: Settings, business: str) -> dict[str, Any]:
    """The A/B gate for one business (raises on failure); the markdown is the decision report."""
    from assetmatch.registry.promotion import evaluate_and_promote

    outcome = evaluate_and_promote(settings, business)
    return {
        "business": business,
        "verdict": outcome.decision.verdict,
        "reason": outcome.decision.reason,
        "promoted": outcome.promoted,
        "champion_version": outcome.champion_version,
        "challenger_version": outcome.challenger_version,
        "markdown": outcome.markdown,
    }


def promote_stage(settings: Settings, businesses: Sequence[str] | None = None) -> StageResult:
    t0 = time.perf_counter()
    try:
        plan = plan_promotion(settings, businesses)
    except Exception as exc:
        return StageResult("promote", "failed", _error(exc), failures={"stage": _error(exc)})
    outcomes = _each(plan.todo, lambda b: promote_one(settings, b))
    return outcome_result("promote", outcomes, plan.kept, time.perf_counter() - t0, "judged")


# ---- 6. serve ------------------------------------------------------------------------------------------
def serve_stage(results: Sequence[StageResult]) -> StageResult:
    """Nothing to run: the serving watcher (serving.reload_interval_s) picks up what changed."""
    by_name = {r.stage: r for r in results}
    promoted = [
        b
        for b, o in by_name.get("promote", StageResult("promote", "skipped", ""))
        .details.get("outcomes", {})
        .items()
        if o.get("promoted")
    ]
    news = []
    if by_name.get("indexes") is not None and by_name["indexes"].status == "ran":
        news.append("a new index")
    if promoted:
        news.append("new champion(s) for " + ", ".join(sorted(promoted)))
    reason = "nothing to do: the serving watcher loads " + (
        " and ".join(news) if news else "new champions and indexes when there are some (none tonight)"
    )
    return StageResult("serve", "skipped", reason, {"promoted": len(promoted)})


# ---- everything ---------------------------------------------------------------------------------------------
def run_nightly(
    settings: Settings, *, full: bool = False, businesses: Sequence[str] | None = None
) -> NightlyResult:
    """Every stage in order, in this process. `full` rebuilds indexes and features and retrains every
    business; `businesses` limits training and promotion to those."""
    t0 = time.perf_counter()
    result = NightlyResult()
    result.stages.append(ingest_stage(settings))
    result.stages.append(index_stage(settings, full))
    result.stages.append(features_stage(settings, full))
    result.stages.append(train_stage(settings, businesses, force=full))
    result.stages.append(promote_stage(settings, businesses))
    result.stages.append(serve_stage(result.stages))
    result.seconds = time.perf_counter() - t0
    return result
