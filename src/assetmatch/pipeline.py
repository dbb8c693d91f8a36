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
`features_decision`, `promotion_pending`), so they are tested without a lake.

Each stage is one implementation, plan -> run -> result: `plan_*` decides, the part functions
(`ingest_one`, `run_indexes`, `run_features`, `train_one`, `promote_one`) do the work and **raise** when
it fails, and `*_result` turns what happened into a `StageResult`. Orchestrators differ only in how
they isolate failures: `run_nightly` (CLI, benchmark) catches per part in this process (the
`*_stage` functions), while `flows/` run each part as a Prefect task, so a failed part is a Failed
task with its error and `retry_if_transient` decides its retries. Either way one broken source or
business is reported in its stage's `failures` and the others go on, and a stage that fails as a
whole is reported while the stages after it still run on what is there.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from assetmatch.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_FILE,
    ConfigError,
    Settings,
    SourceSpec,
    load_settings,
)
from assetmatch.features import journal_path, provider_for_training
from assetmatch.ingest import IngestError, failed_summary, ingest_source, new_run_id, select_sources
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.matching.fit import fit_matching, save_fit, synthetic_requirements
from assetmatch.matching.matcher import SELECTION_FILE, models_dir
from assetmatch.recall import publish
from assetmatch.recall.index import IndexSet, LakeSnapshot
from assetmatch.registry.mlflow import Registry
from assetmatch.registry.promotion import evaluate_and_promote
from assetmatch.registry.training import plan_training, run_shared_training, run_training

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
    failed parts has status "failed" and still lists what it did for the others in `counts`. `notes`
    are one line per part (a verdict and its reason, why a business was left alone), shown below the
    summary table.
    """

    stage: str
    status: Status
    reason: str
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

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

    def failed_parts(self) -> list[str]:
        """`stage/part` for every failure, in run order (what the flow run's error message names)."""
        return [f"{s.stage}/{part}" for s in self.stages for part in s.failures]

    def markdown(self) -> str:
        """The summary shown as the nightly flow's artifact and printed by the CLI and the benchmark.

        The table keeps to four short columns so it fits the Prefect UI; the full reasons, counts,
        per-part notes and errors follow it.
        """
        mark = {"ran": "✅ ran", "skipped": "⏭️ skipped", "failed": "❌ failed"}
        lines = [
            f"# Nightly pipeline: {'ok' if self.ok else 'FAILED'} in {self.seconds:.1f} s",
            "",
            "| stage | status | summary | s |",
            "|---|---|---|---|",
        ]
        for s in self.stages:
            lines.append(f"| {s.stage} | {mark[s.status]} | {_cell(s.reason)} | {s.seconds:.1f} |")
        failures = [(s.stage, part, err) for s in self.stages for part, err in s.failures.items()]
        if failures:
            lines += ["", "## Failed", ""]
            lines += [f"- **{stage} / {part}**: {_one_line(err)}" for stage, part, err in failures]
        counts = {s.stage: {k: v for k, v in s.counts.items() if v} for s in self.stages}  # zeros are noise
        details = [s for s in self.stages if counts[s.stage] or s.notes or len(s.reason) > CELL_CHARS]
        if details:
            lines += ["", "## Details"]
            for s in details:
                lines += ["", f"**{s.stage}** ({s.status}): {_one_line(s.reason)}"]
                if counts[s.stage]:
                    lines.append("- counts: " + ", ".join(f"{k} {v}" for k, v in counts[s.stage].items()))
                lines += [f"- {_one_line(note)}" for note in s.notes]
        return "\n".join(lines)


CELL_CHARS = 60
"""Longest reason shown in the summary table; longer ones are cut there and given in full below it."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    text = _one_line(text).replace("|", "/")
    if len(text) <= CELL_CHARS:
        return text
    return text[: CELL_CHARS - 1].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---- running under an orchestrator ----------------------------------------------------------------
def config_file(config_path: str | os.PathLike[str] | None) -> Path:
    """The config file a scheduled run must use, as an absolute path: `config_path`, else
    $ASSETMATCH_CONFIG, else ./assetmatch.yaml. Raises ConfigError when there is none.

    A deployment run on built-in defaults would ingest nothing and write a lake, Feast files and an
    MLflow database into whatever directory its worker runs in, so "no config" is an error here
    (the CLI, run by a person in a project folder, keeps its defaults).
    """
    raw = config_path or os.environ.get(CONFIG_ENV_VAR)
    if not raw:
        if Path(DEFAULT_CONFIG_FILE).is_file():
            return Path(DEFAULT_CONFIG_FILE).resolve()
        raise ConfigError(
            f"no config: set the run's config_path parameter (or {CONFIG_ENV_VAR} for the worker) to an "
            f"assetmatch.yaml; there is no ./{DEFAULT_CONFIG_FILE} in {Path.cwd()}. "
            "`assetmatch -c CONFIG ops up` sets both"
        )
    path = Path(raw).expanduser()
    if not path.is_file():
        given = "config_path" if config_path else f"${CONFIG_ENV_VAR}"
        raise ConfigError(f"config file {path} ({given}) does not exist (run directory: {Path.cwd()})")
    return path.resolve()


def settings_for_run(config_path: str | os.PathLike[str] | None) -> Settings:
    """Settings of a flow run; fails before anything is written when no usable config is found."""
    return load_settings(config_file(config_path))


def is_transient(exc: BaseException | None) -> bool:
    """Whether retrying later may help. The first error along the cause chain that says so decides:
    a `transient` attribute (a source sets it, e.g. `SourceConnectionError(transient=False)` for a
    refused login); without one, only the operating system's network errors (ConnectionError,
    TimeoutError) count. A validation guard, a bad config or a bug is never retried."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        marked = getattr(exc, "transient", None)
        if isinstance(marked, bool):
            return marked
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect `retry_condition_fn`: retry the failed task run only when its error is transient."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def outcome(state: Any) -> Any:
    """What a finished Prefect state holds: its result when completed, else the exception it failed
    with (a crashed or cancelled run without one becomes a RuntimeError carrying its message)."""
    value = state.result(raise_on_failure=False)
    if state.is_completed():
        return value
    if isinstance(value, BaseException):
        return value
    return RuntimeError(f"{state.name}: {state.message or 'no message'}")


def failed_stage(stage: str, exc: BaseException, seconds: float = 0.0) -> StageResult:
    """The result of a stage that raised as a whole."""
    return StageResult(stage, "failed", _error(exc), seconds=seconds, failures={"stage": _error(exc)})


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
    encoder: str,
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
    if manifest.get("model", {}).get("base") != encoder:
        return Decision(True, f"recall.encoder changed to {encoder!r}")
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

    lake = Lake.from_settings(settings)
    return {t: lake.version(t) for t in (*INDEX_INPUTS, T.FEEDBACK)}


def published_manifest(settings: Settings) -> dict[str, Any] | None:
    """The manifest of the currently published index, None when there is none."""

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
    """The sources to ingest (the enabled ones, or exactly those named). None is an error: an ingest
    that reads nothing would look like "no source changed"."""

    specs = select_sources(settings, sources)
    if not specs:
        raise ConfigError("no sources configured: add at least one enabled entry under `sources:`")
    return specs


def ingest_one(settings: Settings, spec: SourceSpec, run_id: str) -> dict[str, Any]:
    """Ingest one source and return its summary (`SourceSummary.as_dict()`); raises when it fails
    (an `IngestError` from a validation guard carries the source's summary)."""

    return ingest_source(settings, spec, run_id).as_dict()


def ingest_failed(spec: SourceSpec, run_id: str, exc: BaseException, seconds: float = 0.0) -> dict[str, Any]:
    """The summary of a source whose `ingest_one` raised."""

    return failed_summary(spec, run_id, exc, seconds).as_dict()


def _rows_written(summary: Mapping[str, Any]) -> dict[str, int]:
    """Rows one source changed per lake table (restored rows count: they were written back)."""
    kinds = ("inserted", "updated", "soft_deleted", "restored")
    return {t: sum(counts.get(k, 0) for k in kinds) for t, counts in summary["tables"].items()}


def ingest_result(summaries: Sequence[Mapping[str, Any]], seconds: float) -> StageResult:
    """The ingest stage's result from its per-source summaries (`SourceSummary.as_dict()`)."""
    if not summaries:
        error = "no sources configured"
        return StageResult("ingest", "failed", error, seconds=seconds, failures={"stage": error})
    per_source = {s["source"]: _rows_written(s) for s in summaries}
    written = {
        t: sum(rows.get(t, 0) for rows in per_source.values())
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
    notes = [
        f"{name}: " + (", ".join(f"{t} {n} written" for t, n in rows.items() if n) or "unchanged")
        for name, rows in per_source.items()
        if name not in failures
    ]
    return StageResult("ingest", "failed" if failures else "ran", reason, counts, seconds, failures,
                       {"sources": list(summaries)}, notes)  # fmt: skip


def ingest_stage(settings: Settings, sources: Sequence[str] | None = None) -> StageResult:
    """Every source in this process, one after the other; a failing source does not stop the others."""

    t0 = time.perf_counter()
    try:
        specs = ingest_sources(settings, sources)
    except Exception as exc:
        return failed_stage("ingest", exc, time.perf_counter() - t0)
    run_id = new_run_id()
    summaries = []
    for spec in specs:
        started = time.perf_counter()
        try:
            summaries.append(ingest_one(settings, spec, run_id))
        except Exception as exc:  # isolated per source: the others still run
            if not isinstance(exc, IngestError):
                log.exception("source %s failed", spec.name)
            summaries.append(ingest_failed(spec, run_id, exc, time.perf_counter() - started))
    return ingest_result(summaries, time.perf_counter() - t0)


# ---- 2. indexes + coarse fit --------------------------------------------------------------------
def _fit_published(settings: Settings) -> bool:

    return (models_dir(settings) / SELECTION_FILE).exists()


def plan_indexes(settings: Settings, full: bool = False) -> Decision:
    return index_decision(
        lake_versions(settings),
        published_manifest(settings),
        encoder=settings.recall.encoder,
        fit_published=_fit_published(settings),
        full=full,
    )


def build_and_fit(
    settings: Settings, full: bool = False, assets_version: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Build + publish the indexes, then fit and publish the coarse model and selection (as
    `assetmatch index build` does). Returns the manifest, with the fit report under "fit"."""

    lake = Lake.from_settings(settings)
    # one read of the lake: the index and the fit describe the same snapshot
    snapshot = LakeSnapshot.read(lake, assets_version)
    built = IndexSet.build(lake, settings, full=full, progress=progress, snapshot=snapshot)
    train = [r for r in snapshot.train if r.gold_assets]
    synthetic = synthetic_requirements(built, settings, snapshot.glossary, snapshot.query_log)
    fit = fit_matching(
        built, settings, train, feature_provider=provider_for_training(settings), synthetic=synthetic
    )
    save_fit(fit, models_dir(settings))
    return {**built.manifest, "fit": {k: v for k, v in fit.report.items() if k != "selection"}}


def run_indexes(settings: Settings, full: bool = False) -> StageResult:
    """Plan, then build and fit unless the published index is current; raises when the build fails."""
    t0 = time.perf_counter()
    decision = plan_indexes(settings, full)
    if not decision.run:
        return StageResult("indexes", "skipped", decision.reason, seconds=time.perf_counter() - t0)
    manifest = build_and_fit(settings, full)
    return index_result(decision, manifest, time.perf_counter() - t0)


def index_stage(settings: Settings, full: bool = False) -> StageResult:
    """`run_indexes`, its failure reported as a failed result (for the in-process pipeline)."""
    t0 = time.perf_counter()
    try:
        return run_indexes(settings, full)
    except Exception as exc:
        log.exception("index build failed")
        return failed_stage("indexes", exc, time.perf_counter() - t0)


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


def run_features(settings: Settings, full: bool = False, now: datetime | None = None) -> StageResult:
    """Plan, then materialize unless nothing it reads changed; raises when materialization fails."""
    t0 = time.perf_counter()
    decision = plan_features(settings, full, now)
    if not decision.run:
        return StageResult("features", "skipped", decision.reason, seconds=time.perf_counter() - t0)
    report = materialize_features(settings, full, now)
    return features_result(decision, report, time.perf_counter() - t0)


def features_stage(settings: Settings, full: bool = False, now: datetime | None = None) -> StageResult:
    """`run_features`, its failure reported as a failed result (for the in-process pipeline)."""
    t0 = time.perf_counter()
    try:
        return run_features(settings, full, now)
    except Exception as exc:
        log.exception("feature materialization failed")
        return failed_stage("features", exc, time.perf_counter() - t0)


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

    todo: list[str] = []
    kept: dict[str, str] = {}
    for plan in plan_training(settings, list(businesses) if businesses else None):
        if plan.labelled == 0:
            kept[plan.business] = "no labelled requirements"
        elif plan.changed or force or (plan.coarse_refitted and settings.training.retrain_on_coarse_refit):
            todo.append(plan.business)
        elif plan.coarse_refitted:
            kept[plan.business] = (
                f"data unchanged (fingerprint {plan.fingerprint[:12]}), but the coarse model was refitted "
                "since its training: its calibration is stale (training.retrain_on_coarse_refit: true "
                "retrains it)"
            )
        else:
            kept[plan.business] = f"data unchanged (fingerprint {plan.fingerprint[:12]})"
    return TrainPlan(todo, kept)


def shared_plan(settings: Settings, plan: TrainPlan) -> list[str]:
    """The businesses a shared adapter is trained on before the per-business ones (all with labelled
    requirements), or [] when it is off, nothing retrains, or there is only one such business."""
    labelled = sorted({*plan.todo, *(b for b, why in plan.kept.items() if why != "no labelled requirements")})
    if not settings.training.shared_adapter or not plan.todo or len(labelled) < 2:
        return []
    return labelled


def train_shared(settings: Settings, businesses: Sequence[str]) -> dict[str, Any]:
    """Train the shared adapter on these businesses' data and register it (raises on failure)."""

    manifest = published_manifest(settings)
    result, version = run_shared_training(
        settings, list(businesses), index_manifest=str(manifest["id"]) if manifest else ""
    )
    return {"business": "shared adapter", "version": version, "steps": result.fit.steps}


def train_one(settings: Settings, business: str) -> dict[str, Any]:
    """Train one business's adapter and register it as `challenger` (raises on failure)."""

    manifest = published_manifest(settings)
    result, version = run_training(settings, business, index_manifest=str(manifest["id"]) if manifest else "")
    return {"business": business, "version": version, "steps": result.fit.steps}


def _part_notes(failures: Mapping[str, str], kept: Mapping[str, str]) -> list[str]:
    return [f"{b}: failed: {err}" for b, err in sorted(failures.items())] + [
        f"{b}: left alone: {why}" for b, why in sorted(kept.items())
    ]


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
    notes = [
        f"{b}: {verb}" + (f" v{o['version']}" if o.get("version") else "") for b, o in sorted(done.items())
    ]
    notes += _part_notes(failures, kept)
    return StageResult(stage, status, "; ".join(parts), counts, seconds, failures,
                       {"outcomes": done, "kept": dict(kept)}, notes)  # fmt: skip


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
        return failed_stage("train", exc, time.perf_counter() - t0)
    shared = shared_plan(settings, plan)
    outcomes = _each(["shared adapter"] if shared else [], lambda _b: train_shared(settings, shared))
    outcomes.update(_each(plan.todo, lambda b: train_one(settings, b)))
    return outcome_result("train", outcomes, plan.kept, time.perf_counter() - t0, "trained")


# ---- 5. promote -------------------------------------------------------------------------------------
def plan_promotion(settings: Settings, businesses: Sequence[str] | None = None) -> TrainPlan:
    """Businesses whose `challenger` has no gate verdict yet (`todo`), and why the others wait."""

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

    outcome = evaluate_and_promote(settings, business)
    return {
        "business": business,
        "verdict": outcome.decision.verdict,
        "reason": outcome.decision.reason,
        "promoted": outcome.promoted,
        "chosen": outcome.chosen,
        "champion_version": outcome.champion_version,
        "challenger_version": outcome.challenger_version,
        "markdown": outcome.markdown,
        "summary": outcome.summary(),
        "shared": outcome.shared_brief(),  # the shared adapter's evidence where it is not the decision
    }


def promote_result(
    outcomes: Mapping[str, Mapping[str, Any] | BaseException], kept: Mapping[str, str], seconds: float
) -> StageResult:
    """The promote stage's result, by verdict: the gate running is not news, what it decided is."""
    result = outcome_result("promote", outcomes, kept, seconds, "judged")
    judged = result.details["outcomes"]
    promoted = sorted(b for b, o in judged.items() if o.get("promoted"))
    refused = sorted(b for b in judged if b not in promoted)
    parts = []
    if judged:
        parts.append(f"promoted: {', '.join(promoted) or 'none'}")
    if refused:
        parts.append(f"refused: {', '.join(refused)}")
    if result.failures:
        parts.append(f"failed: {', '.join(sorted(result.failures))}")
    if parts:
        result.reason = "; ".join(parts)
    result.counts = {"promoted": len(promoted), "refused": len(refused), **result.counts}
    result.counts.pop("judged", None)
    result.notes = [
        f"{b}: {'promoted ' + str(o.get('chosen', '')) if o.get('promoted') else 'refused'}"
        + (f" challenger v{o['challenger_version']}" if o.get("challenger_version") else "")
        + (f": {o['reason']}" if o.get("reason") else "")
        + (f"; {o['shared']}" if o.get("shared") else "")
        for b, o in sorted(judged.items())
    ] + _part_notes(result.failures, kept)
    return result


def promote_stage(settings: Settings, businesses: Sequence[str] | None = None) -> StageResult:
    t0 = time.perf_counter()
    try:
        plan = plan_promotion(settings, businesses)
    except Exception as exc:
        return failed_stage("promote", exc, time.perf_counter() - t0)
    outcomes = _each(plan.todo, lambda b: promote_one(settings, b))
    return promote_result(outcomes, plan.kept, time.perf_counter() - t0)


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
