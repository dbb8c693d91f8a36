"""Evaluation report: the rich table, the stable JSON, the recall@k plot and the MLflow run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from assetmatch.config import Settings
from assetmatch.evaluation.harness import EvalRun
from assetmatch.evaluation.metrics import KS
from assetmatch.matching.fit import coarse_model_name, selection_summary
from assetmatch.tracking import prefect_run_tags

EXPERIMENT = "assetmatch-eval"
REPORT_VERSION = 1


def report_dict(run: EvalRun, include_requirements: bool = False) -> dict[str, Any]:
    """The machine-readable report (stable keys; see `assetmatch eval --help`)."""
    opts = run.options
    out: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "dataset": opts.dataset.name,
        "dataset_path": str(opts.dataset),
        "split": opts.split,
        "setting": opts.setting,
        "scope": opts.scope,
        "limit": opts.limit,
        "fit_on": str(opts.fit_on) if opts.fit_on else None,
        "n_requirements": run.n_requirements,
        "n_assets": run.n_assets,
        "metrics": run.metrics,
        "baselines": run.baselines,
        "fit": run.fit,
        "index": {
            k: v for k, v in run.index_manifest.items() if isinstance(v, str | int | float | bool | None)
        },
        "timings_s": run.timings_s,
    }
    if include_requirements:
        out["requirements"] = run.per_requirement
    return out


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def print_report(run: EvalRun, console: Console) -> None:
    """Recall@k / all-gold@k / MRR for the model and the RRF baseline, set metrics and latency."""
    m, rrf = run.metrics, run.baselines["rrf"]
    title = (
        f"{run.options.dataset.name} / {run.options.split} / {run.options.setting}"
        f"{' / scope: ' + run.options.scope if run.options.scope != 'none' else ''}: "
        f"{run.n_requirements} requirements, {run.n_assets} tables"
    )
    table = Table(title=title)
    table.add_column("metric")
    for k in KS:
        table.add_column(f"@{k}", justify="right")
    table.add_column("MRR", justify="right")
    for label, src in (("model", m), ("rrf baseline", rrf)):
        table.add_row(f"Recall ({label})", *[_fmt(src[f"recall_at_{k}"]) for k in KS], _fmt(src["mrr"]))
        table.add_row(f"all-gold ({label})", *[_fmt(src[f"all_gold_at_{k}"]) for k in KS], "")
    console.print(table)

    sets = Table(title="Set selection")
    for col in ("selection", "precision", "recall", "F1", "exact match", "mean size"):
        sets.add_column(col, justify="right" if col != "selection" else "left")
    top2 = run.baselines["top2_selection"]
    for label, src in (("calibrated", m), ("always top-2", top2)):
        sets.add_row(
            label,
            *[
                _fmt(src[k])
                for k in ("set_precision", "set_recall", "set_f1", "set_exact_match", "set_size_mean")
            ],
        )
    console.print(sets)
    lat = Table(title="Latency per requirement (ms)")
    for col in ("stage", "p50", "p95"):
        lat.add_column(col, justify="right" if col != "stage" else "left")
    lat.add_row("recall + coarse", _fmt(m["latency_ms_p50"]), _fmt(m["latency_ms_p95"]))
    lat.add_row("total (incl. selection)", _fmt(m["latency_total_ms_p50"]), _fmt(m["latency_total_ms_p95"]))
    console.print(lat)
    if run.fit.get("trained"):
        console.print(
            f"coarse model: {coarse_model_name(run.fit)} (CV all-gold@5 on train: "
            + ", ".join(f"{k}={v:.3f}" for k, v in run.fit["cv_scores_all_gold_at_5"].items())
            + (
                "; second stage: "
                + ", ".join(f"{k}={v:.3f}" for k, v in run.fit["cv_second_stage_scores"].items())
                if run.fit.get("cv_second_stage_scores")
                else ""
            )
            + f"); fitted on {run.fit['n_train_requirements']} train requirements"
        )
        console.print(selection_summary(run.fit))
    else:
        console.print("no train split: RRF fusion and untrained selection (top-1 + FK closure)")


def write_json(run: EvalRun, path: Path, include_requirements: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(report_dict(run, include_requirements), indent=2, default=str), encoding="utf-8"
    )
    return path


def plot_recall(run: EvalRun, path: Path) -> Path:
    """Recall@k and all-gold@k curves of the model against the RRF baseline (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, src, style in (("model", run.metrics, "-"), ("rrf", run.baselines["rrf"], "--")):
        ax.plot(KS, [src[f"recall_at_{k}"] for k in KS], style, marker="o", label=f"Recall@k ({label})")
        ax.plot(KS, [src[f"all_gold_at_{k}"] for k in KS], style, marker="s", label=f"all-gold@k ({label})")
    ax.set_xlabel("k")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(list(KS))
    ax.grid(alpha=0.3)
    ax.set_title(f"{run.options.dataset.name} {run.options.split} ({run.options.setting})")
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(run: EvalRun, out_dir: Path) -> dict[str, Path]:
    """report.json (with per-requirement answers) and recall_at_k.png in `out_dir`."""
    return {
        "report": write_json(run, out_dir / "report.json", include_requirements=True),
        "plot": plot_recall(run, out_dir / "recall_at_k.png"),
    }


def log_mlflow(run: EvalRun, settings: Settings, artifacts: dict[str, Path]) -> str:
    """Log params, metrics (no '@' in names) and artifacts to MLflow; returns the run id."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = Path(settings.mlflow.artifact_location)
        uri = location.resolve().as_uri() if "://" not in settings.mlflow.artifact_location else str(location)
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=uri)
    else:
        experiment_id = experiment.experiment_id
    opts = run.options
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{opts.dataset.name}-{opts.split}-{opts.setting}",
        tags=prefect_run_tags(),
    ) as active:
        mlflow.log_params(
            {
                "dataset": opts.dataset.name,
                "split": opts.split,
                "setting": opts.setting,
                "scope": opts.scope,
                "limit": opts.limit,
                "fit_on": opts.fit_on.name if opts.fit_on else "",
                "fit_limit": opts.fit_limit,
                "coarse_model": coarse_model_name(run.fit),
                "n_requirements": run.n_requirements,
                "index_version": run.index_manifest.get("version", ""),
            }
        )
        metrics = {k: v for k, v in run.metrics.items() if not math.isnan(v)}
        metrics.update({f"rrf_{k}": v for k, v in run.baselines["rrf"].items()})
        metrics.update({f"top2_{k}": v for k, v in run.baselines["top2_selection"].items()})
        mlflow.log_metrics(metrics)
        for path in artifacts.values():
            mlflow.log_artifact(str(path))
        return str(active.info.run_id)
