"""The demo as an ordered list of named steps, each one library call, shown with rich progress.

A step is a name, a one-line description and a function `fn(ctx) -> summary`; `STEPS` keeps them
in run order. Every step calls the same library functions the CLI and the flows call (nothing is
re-implemented here), and leaves its result in `ctx.results[name]` for the steps after it.

    ctx = DemoContext(dir=Path(".assetmatch/demo"))
    run_steps(ctx)                       # everything
    run_steps(ctx, only=["generate"])    # just the sample warehouse
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from assetmatch import pipeline
from assetmatch.config import Settings, load_settings
from assetmatch.demo import catalog
from assetmatch.demo.warehouse import DEFAULT_SEED, DemoPaths, build_demo, load_demo
from assetmatch.evaluation import metrics as M
from assetmatch.ingest import run_ingest
from assetmatch.lake.delta import Lake
from assetmatch.matching.fit import coarse_model_name, selection_summary
from assetmatch.matching.matcher import Matcher
from assetmatch.pipeline import build_and_fit  # what `assetmatch index build` and nightly run
from assetmatch.registry.training import run_shared_training, run_training
from assetmatch.serving.app import create_app


@dataclass
class DemoContext:
    """What the steps share: where the demo lives, its settings, and earlier steps' results."""

    dir: Path
    seed: int = DEFAULT_SEED
    reference_date: date | str | None = None
    fresh: bool = False
    console: Console = field(default_factory=Console)
    paths: DemoPaths | None = None
    results: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    keep_serving: bool = False  # after the last step, keep the API up until Ctrl-C
    progress: Progress | None = None  # the live display, for steps that report their own progress
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The demo's own settings (its assetmatch.yaml), loaded once the warehouse is generated."""
        if self._settings is None:
            if self.paths is None:
                raise RuntimeError("the demo warehouse has not been generated yet (run the `generate` step)")
            self._settings = load_settings(self.paths.config)
        return self._settings


INGEST_COLUMNS = ("assets", "query_log", "requirements", "glossary")

StepFn = Callable[[DemoContext], str]


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    fn: StepFn


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float  # wall clock
    summary: str
    cpu_seconds: float = 0.0  # this process's CPU time (all threads): comparable on a busy machine


STEPS: list[Step] = []


def step(name: str, description: str) -> Callable[[StepFn], StepFn]:
    """Register `fn` as the next demo step."""

    def register(fn: StepFn) -> StepFn:
        if any(s.name == name for s in STEPS):
            raise ValueError(f"demo step {name!r} is registered twice")
        STEPS.append(Step(name, description, fn))
        return fn

    return register


def step_names() -> list[str]:
    return [s.name for s in STEPS]


# ---- the steps -----------------------------------------------------------------------------------
@step(
    "generate", "Generate the sample warehouse: 3 games, SQLite + catalog, query log, glossary, requirements"
)
def generate(ctx: DemoContext) -> str:
    ctx.paths = build_demo(ctx.dir, seed=ctx.seed, reference_date=ctx.reference_date, fresh=ctx.fresh)
    ctx._settings = None

    tables = sum(len(catalog.game(b).tables) for b in ctx.paths.businesses)
    return (
        f"{len(ctx.paths.businesses)} games, {tables} tables, reference date "
        f"{ctx.paths.reference_date.isoformat()} -> {ctx.paths.root}"
    )


@step("ingest", "Ingest every source into the Delta lake (validate, quarantine, merge)")
def ingest(ctx: DemoContext) -> str:

    summary = run_ingest(ctx.settings)
    ctx.results["ingest_summary"] = summary
    table = Table(title=f"ingest run {summary.run_id}")
    table.add_column("source", no_wrap=True)
    table.add_column("status")
    for column in ("tables", "queries", "reqs", "terms", "quarantined", "s"):
        table.add_column(column, justify="right")
    for src in summary.sources:
        counts = src.tables
        table.add_row(
            src.source,
            "[green]ok[/green]" if src.ok else "[red]failed[/red]",
            *(f"{counts[t].inserted + counts[t].updated}/{counts[t].extracted}" for t in INGEST_COLUMNS),
            str(sum(c.quarantined for c in counts.values())),
            f"{src.duration_s:.1f}",
        )
    ctx.console.print(table)
    if not summary.ok:
        errors = "; ".join(f"{s.source}: {s.error}" for s in summary.failed)
        raise RuntimeError(f"ingest failed for {len(summary.failed)} source(s): {errors}")
    totals = summary.totals()
    quarantined = sum(c.quarantined for c in totals.values())
    return (
        f"{totals['assets'].extracted} tables, {totals['query_log'].extracted} queries, "
        f"{totals['requirements'].extracted} requirements, {totals['glossary'].extracted} glossary terms; "
        f"{quarantined} quarantined (lake {ctx.settings.lake.uri})"
    )


def reference_time(ctx: DemoContext) -> datetime:
    """The demo's "now": midnight UTC of its reference date (the query log ends the day before)."""
    paths = ctx.paths
    if paths is None:
        raise RuntimeError("the demo warehouse has not been generated yet (run the `generate` step)")
    return datetime.combine(paths.reference_date, dt_time(0), UTC)


@step("features", "Compute daily feature snapshots from the lake and load Feast's online store")
def features(ctx: DemoContext) -> str:
    from assetmatch.features.store import materialize

    report = materialize(ctx.settings, now=reference_time(ctx))
    ctx.results["features_report"] = report
    written = report.features
    return (
        f"{len(written.snapshots)} daily snapshots ({written.asset_rows} table rows, {written.pair_rows} "
        f"table-pair rows), {report.mode} load into the {report.online_store} online store"
    )


@step("index", "Build the recall indexes and fit coarse fusion + set selection on the train split")
def index(ctx: DemoContext) -> str:

    manifest = build_and_fit(ctx.settings)
    fit = manifest["fit"]
    return (
        f"index {manifest['id']} over {manifest['counts']['assets']} tables; coarse model "
        f"{coarse_model_name(fit)} fitted on {fit.get('n_train_requirements', 0)} train requirements; "
        f"{selection_summary(fit)}"
    )


@step("evaluate", "Match every test requirement (never seen in fitting) and score ranking and selection")
def evaluate(ctx: DemoContext) -> str:

    settings = ctx.settings
    lake = Lake.from_settings(settings)
    matcher = Matcher.from_settings(settings)
    table = Table(title="test split (requirements of intents never seen in training)")
    for column in ("business", "n", "recall@5", "all gold@5", "MRR", "set F1", "exact set"):
        table.add_column(column, justify="left" if column == "business" else "right")
    scores: dict[str, dict[str, float]] = {}
    all_rankings: list[list[str]] = []
    all_selected: list[list[str]] = []
    all_golds: list[list[str]] = []
    for business in settings.business_names():
        tests = lake.read_requirements(business=business, split="test")
        if not tests:
            continue
        results = [matcher.match(business, r.text, k=max(M.KS)) for r in tests]
        rankings = [[t.asset_id for t in res.ranked] for res in results]
        selected = [res.selected for res in results]
        golds = [r.gold_assets for r in tests]
        scores[business] = {**M.ranking_metrics(rankings, golds), **M.set_metrics(selected, golds)}
        all_rankings += rankings
        all_selected += selected
        all_golds += golds
        table.add_row(business, str(len(tests)), *_score_cells(scores[business]))
    if not all_golds:
        return "no test requirements in the lake"
    overall = {**M.ranking_metrics(all_rankings, all_golds), **M.set_metrics(all_selected, all_golds)}
    scores["all"] = overall
    table.add_row("[bold]all", f"[bold]{len(all_golds)}", *_score_cells(overall))
    ctx.console.print(table)
    ctx.results["evaluation"] = scores
    return (
        f"{len(all_golds)} test requirements: recall@5 {overall['recall_at_5']:.3f}, "
        f"MRR {overall['mrr']:.3f}, set F1 {overall['set_f1']:.3f}"
    )


def _score_cells(scores: dict[str, float]) -> list[str]:
    keys = ("recall_at_5", "all_gold_at_5", "mrr", "set_f1", "set_exact_match")
    return [f"{scores[k]:.3f}" for k in keys]


@step(
    "train", "Train a shared LoRA ranker on all games, then each game's own from it; register them in MLflow"
)
def train(ctx: DemoContext) -> str:

    settings = ctx.settings
    plan = pipeline.plan_train(settings)  # the nightly pipeline's plan: same businesses, same reasons
    lines = [f"{b}: {why}" for b, why in sorted(plan.kept.items())]
    shared = pipeline.shared_plan(settings, plan)
    if shared:
        result, version = run_shared_training(settings, shared, progress=ctx.progress)
        best = f" (best {result.fit.best_step})" if result.fit.best_step else ""
        lines.append(f"shared adapter: v{version}, {result.fit.steps} steps{best}")
    for business in plan.todo:
        result, version = run_training(settings, business, progress=ctx.progress)
        challenger = result.reports["challenger"].means()
        coarse = result.reports["coarse_only"].means()
        lines.append(
            f"{business}: v{version}, validation (cross-fitted) "
            f"all-gold@3 {challenger['all_gold_at_3']:.2f} / set F1 "
            f"{challenger['set_f1']:.2f} (coarse-only {coarse['all_gold_at_3']:.2f} / {coarse['set_f1']:.2f}), "
            f"{result.fit.steps} steps, {result.calibration.cascade.describe()}"
        )
    return "; ".join(lines)


@step("promote", "A/B gate on held-out train requirements: coarse-only vs shared vs per-game adapter")
def promote(ctx: DemoContext) -> str:

    settings = ctx.settings
    plan = pipeline.plan_promotion(settings)  # the nightly pipeline's rule: challengers not yet judged
    lines = []
    for business in plan.todo:
        lines.append(f"{business}: {pipeline.promote_one(settings, business)['summary']}")
    return "; ".join(lines) or "no challenger waiting"


@step("serve", "Start the matching API (FastAPI + uvicorn, champions loaded) on 127.0.0.1")
def serve(ctx: DemoContext) -> str:
    import socket
    import threading

    import httpx
    import uvicorn

    settings = ctx.settings
    paths = ctx.paths
    assert paths is not None
    app = create_app(settings, spool_dir=str(paths.root / "serving" / "feedback-spool"))
    with socket.socket() as probe:  # a free loopback port for this run
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="assetmatch-demo-server", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    ctx.cleanups.append(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVE_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the matching API exited during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                ctx.results["server_url"] = url
                return f"serving on {url} (POST /v1/match, GET /metrics); stopped when the demo ends"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the matching API at {url} was not ready within {SERVE_READY_TIMEOUT_S:.0f} s")


SERVE_READY_TIMEOUT_S = 600.0  # start-up loads the base model, index and adapters: minutes on a busy CPU

# New requests, in both languages, that are neither labelled nor logged anywhere in the demo.
SAMPLE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "moba": ("上周每个英雄的胜率和禁用率", "How many players paid yesterday, split by channel?"),
    "farm": ("最近一个月普通活跃人数的趋势", "Which crops were harvested most last week?"),
    "card": ("大R玩家最近七天充了多少钱", "Channel A daily report for this month"),
}


@step("samples", "Ask the API (or the matcher) a few new requests, then each promoted game's test split")
def samples(ctx: DemoContext) -> str:
    settings = ctx.settings
    url = ctx.results.get("server_url")
    table = Table(title="sample matches" + (f" from {url}" if url else ""), show_lines=True)
    table.add_column("business", no_wrap=True)
    table.add_column("requirement")
    table.add_column("selected tables")
    table.add_column("next candidates", style="dim")
    table.add_column("answered by", style="dim")
    shown = fine = 0
    for business in settings.business_names():
        for text in SAMPLE_REQUIREMENTS.get(business, ()):
            answer = _sample_match(ctx, url, business, text)
            table.add_row(
                business,
                text,
                "\n".join(answer.selected_names) or "(none)",
                "\n".join(answer.other_names[:3]),
                answer.who,
            )
            shown += 1
            fine += answer.fine_depth > 0
    served = _served_test_splits(ctx, url)
    for result in served:  # a few of the answers the promoted adapter gave, marked right or wrong
        for text, answer, gold in result.examples[:SERVED_EXAMPLES]:
            right = "exact" if set(answer.selected_ids) == set(gold) else "not exact"
            selected = "\n".join(answer.selected_names) or "(none)"
            table.add_row(result.business, f"{text}\n(test requirement: {right})", selected, "", answer.who)
    ctx.console.print(table)
    for result in served:
        ctx.console.print(f"  {result.line()}")
    summary = f"{shown} new requests matched" + (" through the API" if url else "") + f", {fine} fine-ranked"
    return "; ".join([summary, *(s.line() for s in served)])


SERVED_EXAMPLES = 2  # fine-ranked test requirements shown per promoted game


@dataclass
class SampleAnswer:
    """One request's answer as the demo shows it."""

    selected_ids: list[str]
    selected_names: list[str]
    other_names: list[str]
    who: str  # `answered_by`
    fine_depth: int  # tables the adapter scored (0: the coarse ranking answered)
    adapter: bool  # whether the business has an adapter being served (it may have skipped this one)


@dataclass
class ServedTests:
    """A business's `test` requirements answered as served (its promoted adapter and cascade), next
    to the coarse-only answers of the `evaluate` step (before any adapter was promoted)."""

    business: str
    n: int
    served: dict[str, float]  # set metrics of the served answers
    coarse: dict[str, float] | None  # the evaluate step's figures, when it ran in this demo
    examples: list[tuple[str, SampleAnswer, list[str]]]  # every fine-ranked one: (text, answer, gold)

    @property
    def fine_ranked(self) -> int:
        return len(self.examples)

    def line(self) -> str:
        def both(key: str) -> str:
            before = f"{self.coarse[key]:.3f} -> " if self.coarse and key in self.coarse else ""
            return f"{before}{self.served[key]:.3f}"

        return (
            f"{self.business} test split as served: {self.fine_ranked} of {self.n} fine-ranked, "
            f"set F1 {both('set_f1')}, exact {both('set_exact_match')}"
        )


def served_tests(
    business: str,
    texts: Sequence[str],
    answers: Sequence[SampleAnswer],
    golds: Sequence[Sequence[str]],
    coarse: dict[str, float] | None,
) -> ServedTests:
    """Score a business's served answers to its test requirements against their gold tables."""
    metrics = M.set_metrics([a.selected_ids for a in answers], golds)
    fine = [(t, a, list(g)) for t, a, g in zip(texts, answers, golds, strict=True) if a.fine_depth > 0]
    return ServedTests(business, len(answers), metrics, coarse, fine)


def _served_test_splits(ctx: DemoContext, url: str | None) -> list[ServedTests]:
    """Each business with an adapter being served: its `test` requirements (intents no adapter was
    trained or gated on) through the API, scored, next to the coarse-only figures of `evaluate` — what
    the promotion changed on requirements the gate never saw. Businesses without one are skipped
    (their answers are the evaluate step's)."""
    lake = Lake.from_settings(ctx.settings)
    before = ctx.results.get("evaluation", {})
    out = []
    for business in ctx.settings.business_names():
        tests = lake.read_requirements(business=business, split="test")
        if not tests:
            continue
        first = _sample_match(ctx, url, business, tests[0].text)
        if not first.adapter:
            continue
        answers = [first, *(_sample_match(ctx, url, business, r.text) for r in tests[1:])]
        golds = [r.gold_assets for r in tests]
        out.append(served_tests(business, [r.text for r in tests], answers, golds, before.get(business)))
    return out


def answered_by(model_version: str, fine_depth: int, fine_skipped: str) -> str:
    """Who answered a match: the business's adapter (how many tables it scored), or the coarse
    ranking and why the adapter did not run."""
    if fine_depth:
        version = f"v{model_version}" if model_version.isdigit() else model_version  # a registry version
        return f"adapter {version}: {fine_depth} tables fine-ranked"
    if fine_skipped:
        return f"coarse ranking ({fine_skipped.removeprefix('cascade: ')})"
    return "coarse ranking (no adapter promoted)"


def _sample_match(ctx: DemoContext, url: str | None, business: str, text: str) -> SampleAnswer:
    """One request answered through the API (`url`) or, without one, the matcher in this process."""
    if url:
        import httpx

        response = httpx.post(
            f"{url}/v1/match", json={"business": business, "requirement": text, "k": 5}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        tables = body["tables"]
        depth = int(body.get("fine_depth") or 0)
        skipped = body.get("fine_skipped") or ""
        return SampleAnswer(
            [t["asset_id"] for t in tables if t["selected"]],
            [t["name"] for t in tables if t["selected"]],
            [t["name"] for t in tables if not t["selected"]],
            answered_by(body.get("model_version", ""), depth, skipped),
            depth,
            bool(depth or skipped),
        )

    matcher = ctx.results.get("_matcher") or Matcher.from_settings(ctx.settings)
    ctx.results["_matcher"] = matcher
    result = matcher.match(business, text, k=5)
    return SampleAnswer(
        list(result.selected),
        [t.name for t in result.ranked if t.selected],
        [t.name for t in result.ranked if not t.selected],
        answered_by(result.model_version, result.fine_depth, result.fine_skipped),
        result.fine_depth,
        bool(result.fine_depth or result.fine_skipped),
    )


# ---- running -------------------------------------------------------------------------------------
def select_steps(only: Sequence[str] | None = None) -> list[Step]:
    """The registered steps, filtered to `only` (kept in run order); unknown names are an error."""
    if not only:
        return list(STEPS)
    unknown = sorted(set(only) - set(step_names()))
    if unknown:
        raise ValueError(f"unknown demo step(s) {unknown} (known: {step_names()})")
    return [s for s in STEPS if s.name in set(only)]


def run_steps(
    ctx: DemoContext, only: Sequence[str] | None = None, show_progress: bool = True
) -> list[StepResult]:
    """Run the steps in order with a progress display; stops at the first step that raises."""
    steps = select_steps(only)
    if "generate" not in {s.name for s in steps} and ctx.paths is None:
        ctx.paths = load_demo(ctx.dir)  # later steps alone: reuse the generated folder
    results: list[StepResult] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        console=ctx.console,
        disable=not show_progress,
        transient=False,
    ) as progress:
        ctx.progress = progress if show_progress else None
        try:
            _run_each(ctx, steps, progress, show_progress, results)
            if ctx.keep_serving and ctx.results.get("server_url"):
                _hold(ctx)
        finally:
            ctx.progress = None
            while ctx.cleanups:  # e.g. stop the API server the `serve` step started
                ctx.cleanups.pop()()
    return results


def _run_each(
    ctx: DemoContext, steps: list[Step], progress: Progress, show_progress: bool, results: list[StepResult]
) -> None:
    for number, s in enumerate(steps, start=1):
        task = progress.add_task(f"{number}/{len(steps)} {s.name}: {s.description}", total=1)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = s.fn(ctx)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        ctx.results[s.name] = summary
        progress.update(task, completed=1, description=f"[green]✓[/green] {number}/{len(steps)} {s.name}")
        if show_progress:
            progress.console.print(f"    {summary}")
        results.append(StepResult(s.name, seconds, summary, cpu))


def _hold(ctx: DemoContext) -> None:
    """Keep the demo's API server up until Ctrl-C."""
    ctx.console.print(
        f"[bold]the matching API stays up at {ctx.results['server_url']}[/bold] "
        "(try POST /v1/match, GET /docs); Ctrl-C stops it"
    )
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        ctx.console.print("stopping the API")


STEPS_FILE = "steps.json"


def write_step_times(results: Sequence[StepResult], path: Path) -> Path:
    """The run's steps — wall and CPU seconds, one-line result — as JSON (`assetmatch demo` writes it
    into the demo's folder as `STEPS_FILE`): what a build took, step by step, for scripts that
    compare builds (`benchmarks/demo_days.py`) instead of reading the printed table."""
    total = sum(r.seconds for r in results)
    data = {"steps": [asdict(r) for r in results], "total_seconds": round(total, 1)}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def timing_table(results: Iterable[StepResult]) -> Table:
    """Per-step timings as a rich table."""
    table = Table(title="assetmatch demo", show_lines=False)
    table.add_column("step")
    table.add_column("wall s", justify="right")
    table.add_column("cpu s", justify="right")
    table.add_column("result")
    total = cpu_total = 0.0
    for r in results:
        total += r.seconds
        cpu_total += r.cpu_seconds
        table.add_row(r.name, f"{r.seconds:.1f}", f"{r.cpu_seconds:.1f}", r.summary)
    table.add_row("[bold]total", f"[bold]{total:.1f}", f"[bold]{cpu_total:.1f}", "")
    return table
