"""CLI of the matching stage: `assetmatch index build`, `assetmatch match`, `assetmatch eval`.

Heavy modules (the recall index, torch, scikit-learn, mlflow, matplotlib) are imported inside the
commands so `assetmatch --help` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.table import Table

from assetmatch.cli.common import console, err_console, friendly_errors, settings
from assetmatch.serving.threads import limit_threads_before_load
from assetmatch.types import PATHS

if TYPE_CHECKING:
    from assetmatch.config import Settings
    from assetmatch.matching.types import FineRanker, MatchResult

index_app = typer.Typer(
    help="Build and publish the recall indexes (and the fitted coarse ranking).", no_args_is_help=True
)


def _progress(items: Iterator[Any], total: int, description: str) -> Iterator[Any]:
    from rich.progress import track

    return iter(track(items, total=total, description=description, console=err_console, transient=True))


@index_app.command("build")
def index_build(
    full: bool = typer.Option(
        False, "--full", help="Embed every table again instead of reusing cached vectors."
    ),
    assets_version: int | None = typer.Option(
        None, "--assets-version", help="Build from this version of the lake's assets table (default: latest)."
    ),
    fit: bool = typer.Option(
        True,
        "--fit/--no-fit",
        help="Also fit the coarse fusion model and set selection on the lake's `train` requirements (if any).",
    ),
) -> None:
    """Build every recall index from the lake and publish it as the current index."""
    from assetmatch.lake.delta import Lake
    from assetmatch.matching.fit import coarse_model_name, selection_summary
    from assetmatch.matching.matcher import models_dir
    from assetmatch.pipeline import build_and_fit
    from assetmatch.recall.index import IndexSet

    cfg = settings()
    with friendly_errors(FileNotFoundError, ValueError, LookupError):
        if not fit:
            index = IndexSet.build(
                Lake.from_settings(cfg), cfg, assets_version=assets_version, full=full, progress=True
            )
            console.print(
                f"published index [bold]{index.manifest.get('id')}[/bold] with {len(index.assets)} tables"
            )
            return
        manifest = build_and_fit(cfg, full=full, assets_version=assets_version, progress=True)
        console.print(
            f"published index [bold]{manifest['id']}[/bold] with {manifest['counts']['assets']} tables"
        )
        report = manifest["fit"]
        if not report.get("trained"):
            console.print(
                "nothing to fit on (no labelled `train` requirements, synthetic ones off): matching uses "
                "reciprocal-rank fusion"
            )
        else:
            console.print(
                f"coarse model {coarse_model_name(report)} fitted on {report.get('n_labelled', 0)} labelled and "
                f"{report.get('n_synthetic', 0)} synthetic requirements ({report.get('trained_on')}) "
                f"-> {models_dir(cfg)}"
            )
            console.print(selection_summary(report))


def match(
    text: str = typer.Argument(..., help="The requirement, in any language."),
    business: str = typer.Option(
        ..., "--business", "-b", help="Business whose tables (plus shared ones) to search."
    ),
    k: int = typer.Option(10, "-k", min=1, help="How many ranked tables to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    explain: bool = typer.Option(
        False, "--explain", help="Show each table's reasons (path, rank, matched terms)."
    ),
    fine: bool = typer.Option(
        True,
        "--fine/--coarse-only",
        help="Fine-rank with the business's champion adapter from the MLflow registry, when it has one "
        "(the cascade decides per requirement, as in the API).",
    ),
    databases: list[str] | None = typer.Option(
        None,
        "--database",
        "-d",
        metavar="DATABASE",
        help="Answer only with tables of this database (repeat for several): the requester's scope, "
        "e.g. the database a Text2SQL session is connected to.",
    ),
) -> None:
    """Rank the tables for a requirement and show the selected set."""
    # One requirement is small math: one thread per library, so that a busy machine's other work
    # does not make OpenMP/BLAS wait for cores (an explicit OMP_NUM_THREADS etc. still wins).
    limit_threads_before_load(1)
    from assetmatch.cli.match_cache import LazyChampion, online_features
    from assetmatch.matching.matcher import Matcher, UnknownBusinessError, UnknownDatabaseError, describe
    from assetmatch.recall.index import IndexLoadError

    cfg = settings()
    scope = databases or None  # typer gives [] when the option is not used
    with friendly_errors(UnknownBusinessError, UnknownDatabaseError, IndexLoadError, FileNotFoundError):
        ranker, note = _champion_ranker(cfg, business) if fine else (None, "off (--coarse-only)")
        matcher = Matcher.from_settings(cfg, fine_ranker=ranker, online_features=online_features)
        try:
            result = matcher.match(business, text, k=k, databases=scope)
        except UnknownDatabaseError:
            raise
        except Exception as exc:  # the adapter's model failed to load: the coarse answer, saying why
            if not isinstance(ranker, LazyChampion) or ranker.loaded():
                raise
            matcher.fine_ranker, note = None, f"unavailable ({type(exc).__name__}: {exc})"
            result = matcher.match(business, text, k=k, databases=scope)
    if as_json:
        console.print_json(json.dumps(describe(result), ensure_ascii=False, default=str))
        return
    paths = [p for p in PATHS if any(p in t.path_scores for t in result.ranked)]
    where = f" (databases: {', '.join(sorted(set(scope)))})" if scope else ""
    table = Table(title=f"{business}{where}: {text}")
    table.add_column("#", justify="right")
    table.add_column("sel")
    table.add_column("table", no_wrap=True)
    table.add_column("score", justify="right")
    for p in paths:
        table.add_column(p, justify="right")
    for i, t in enumerate(result.ranked, start=1):
        row = [str(i), "✔" if t.selected else "", t.asset_id, f"{t.score:.3f}"]
        row += [f"{t.path_scores[p]:.3f} (#{t.path_ranks[p]})" if p in t.path_scores else "" for p in paths]
        table.add_row(*row)
    console.print(table)
    if explain:
        for i, t in enumerate(result.ranked, start=1):
            console.print(f"[bold]{i}. {t.asset_id}[/bold]")
            for reason in t.reasons:
                console.print(f"   - {reason}", markup=False)
    console.print(f"selected: {', '.join(result.selected) or '(none)'}")
    console.print(f"coarse model: {COARSE_MODEL_NOTES.get(result.coarse_model, result.coarse_model)}")
    console.print(fine_line(result) or f"fine ranker: {note or 'not run (no candidates)'}", markup=False)
    console.print(
        "timings (ms): " + ", ".join(f"{k}={v:.1f}" for k, v in result.timings_ms.items()),
        style="dim",
    )


def _champion_ranker(cfg: Settings, business: str) -> tuple[FineRanker | None, str]:
    """The business's champion adapter from the MLflow registry as a fine ranker, or (None, why not);
    its model loads only if the cascade fine-ranks (`assetmatch.cli.match_cache`)."""
    from assetmatch.cli.match_cache import champion_ranker

    return champion_ranker(cfg, business)


COARSE_MODEL_NOTES = {
    "fusion": "untrained reciprocal-rank fusion (no labelled or synthetic requirements were fitted)",
    "synthetic": "fitted on requirements synthesized from the library's metadata (no labels yet)",
    "labelled": "fitted on labelled requirements",
    "blended": "fitted on labelled requirements blended with synthetic ones",
}


def fine_line(result: MatchResult) -> str:
    """One line on what the fine ranker did for `result` ('' when the business has no adapter)."""
    if result.fine_depth:
        name, _, version = result.model_version.rpartition("/")
        adapter = f"{name} v{version}" if name else f"v{version}"
        return f"fine ranker: {result.fine_depth} tables (adapter {adapter})"
    if result.fine_skipped:
        return f"fine ranker skipped: {result.fine_skipped}"
    return ""


def evaluate(
    dataset: Path = typer.Option(
        ...,
        "--dataset",
        exists=True,
        file_okay=False,
        help="Benchmark folder (assets.jsonl.gz + requirements.jsonl.gz).",
    ),
    split: str = typer.Option(
        "dev", "--split", help="Split to evaluate (dev, test, ...). Never `train`-tuned."
    ),
    setting: str = typer.Option(
        "union",
        "--setting",
        help="union: every table of every database is a candidate; business: only its own.",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Evaluate only the first N requirements of the split."
    ),
    fit_on: Path | None = typer.Option(
        None,
        "--fit-on",
        exists=True,
        file_okay=False,
        help="Fit on the `train` split of this other dataset (same asset library), e.g. spider for cspider.",
    ),
    fit_limit: int | None = typer.Option(
        None, "--fit-limit", min=1, help="Fit on a random sample of at most N train requirements (faster)."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Write the machine-readable report here."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for report.json (with every answer) and recall_at_k.png."
    ),
    mlflow: bool = typer.Option(
        True, "--mlflow/--no-mlflow", help="Log params, metrics and artifacts to MLflow."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train sample and the models."),
    label_free: bool = typer.Option(
        False,
        "--label-free",
        help="The first-day setting: fit on no labelled requirement of any dataset, only on requirements "
        "synthesized from the library's own metadata (comments, keys, glossary, query-log co-usage).",
    ),
    scope: str = typer.Option(
        "none",
        "--scope",
        metavar="none|database",
        help="none: each requirement is matched in the whole library of its setting; database: inside the "
        "database(s) of its gold tables, as a request that names its scope (`--database` of `assetmatch "
        "match`, `databases` of the API) is served, and the train requirements are fitted on there too.",
    ),
    workdir: Path | None = typer.Option(
        None,
        "--workdir",
        file_okay=False,
        help="Keep the evaluation lake and indexes here instead of a temporary folder; a later run with the "
        "same folder reuses the cached table embeddings.",
    ),
) -> None:
    """Evaluate matching on a benchmark: Recall@k, all-gold@k, MRR, set P/R/F1/exact match, latency.

    The dataset's tables go through the catalog_file source into a temporary lake, the indexes are built,
    the coarse model and selection are fitted on its `train` split only (or --fit-on's), and every
    requirement of --split is matched. CSpider has no train split: use `--fit-on <spider folder>`
    (same tables) or let it run untrained (RRF + top-1 selection).
    """
    from assetmatch.evaluation.harness import EvalOptions, Scope, Setting, run_eval
    from assetmatch.evaluation.report import log_mlflow, plot_recall, print_report, write_json, write_outputs

    if setting not in ("union", "business"):
        err_console.print(f"[red]error:[/red] --setting must be union or business, not {setting!r}")
        raise typer.Exit(2)
    if scope not in ("none", "database"):
        err_console.print(f"[red]error:[/red] --scope must be none or database, not {scope!r}")
        raise typer.Exit(2)
    import logging

    from rich.logging import RichHandler

    stage_log = logging.getLogger("assetmatch.evaluation")
    stage_log.setLevel(logging.INFO)
    stage_log.addHandler(RichHandler(console=err_console, show_path=False))
    stage_log.propagate = False
    cfg = settings()
    with friendly_errors(FileNotFoundError, ValueError):
        options = EvalOptions(
            dataset=dataset,
            split=split,
            setting=cast(Setting, setting),
            limit=limit,
            fit_on=fit_on,
            fit_limit=fit_limit,
            seed=seed,
            workdir=workdir,
            label_free=label_free,
            scope=cast(Scope, scope),
        )
        run = run_eval(options, cfg, progress=_progress)
    print_report(run, console)
    artifacts: dict[str, Path] = {}
    if json_path is not None:
        artifacts["json"] = write_json(run, json_path)
    if out is not None:
        artifacts.update(write_outputs(run, out))
    if mlflow:
        if "plot" not in artifacts:
            import tempfile

            tmp = Path(tempfile.mkdtemp(prefix="assetmatch-eval-out-"))
            artifacts["plot"] = plot_recall(run, tmp / "recall_at_k.png")
            artifacts["report"] = write_json(run, tmp / "report.json")
        run_id = log_mlflow(run, cfg, artifacts)
        console.print(f"MLflow run {run_id} ({_without_password(cfg.mlflow.tracking_uri)})", style="dim")
    for name, path in artifacts.items():
        console.print(f"{name}: {path}", style="dim")


def _without_password(uri: str) -> str:
    """`uri` with the password of its user-info masked (`postgresql://u:***@host/db`)."""
    from urllib.parse import urlsplit, urlunsplit

    from assetmatch.config import scrub

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        uri = urlunsplit(parts._replace(netloc=netloc))
    return scrub(uri)


def register(app: typer.Typer) -> None:
    """Add `index build`, `match` and `eval` to the root app."""
    app.add_typer(index_app, name="index")
    app.command("match")(match)
    app.command("eval")(evaluate)
