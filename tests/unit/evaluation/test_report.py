"""Report outputs from a hand-built run: stable JSON keys, the rich table, the PNG plot, the MLflow run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from rich.console import Console

from assetmatch.config import MlflowConfig, Settings
from assetmatch.evaluation.harness import EvalOptions, EvalRun
from assetmatch.evaluation.metrics import KS
from assetmatch.evaluation.report import log_mlflow, print_report, report_dict, write_json, write_outputs


def _run() -> EvalRun:
    ranking = {f"recall_at_{k}": min(1.0, 0.5 + k / 40) for k in KS}
    ranking |= {f"all_gold_at_{k}": min(1.0, 0.4 + k / 40) for k in KS}
    ranking["mrr"] = 0.7
    sets = {
        "set_precision": 0.8,
        "set_recall": 0.7,
        "set_f1": 0.72,
        "set_exact_match": 0.5,
        "set_size_mean": 1.6,
    }
    metrics = ranking | sets | {"latency_ms_p50": 10.0, "latency_ms_p95": 20.0}
    metrics |= {"latency_total_ms_p50": 11.0, "latency_total_ms_p95": 21.0}
    return EvalRun(
        options=EvalOptions(dataset=Path("benchmarks/spider"), split="dev", setting="union", limit=2),
        metrics=metrics,
        baselines={"rrf": ranking, "top2_selection": sets},
        fit={
            "trained": True,
            "cv_chosen": "logreg",
            "cv_scores_all_gold_at_5": {"logreg": 0.9},
            "n_train_requirements": 3,
        },
        n_requirements=2,
        n_assets=5,
        index_manifest={"version": "idx-1", "counts": {"assets": 5}},
        per_requirement=[{"id": "q1", "gold": ["a"], "ranked": ["a"], "selected": ["a"]}],
    )


def test_json_report_has_the_stable_keys(tmp_path: Path) -> None:
    report = json.loads(write_json(_run(), tmp_path / "r.json").read_text())
    assert {"metrics", "n_requirements", "dataset", "split", "setting"} <= set(report)
    assert (report["dataset"], report["split"], report["setting"], report["n_requirements"]) == (
        "spider",
        "dev",
        "union",
        2,
    )
    for k in KS:
        assert f"recall_at_{k}" in report["metrics"] and f"all_gold_at_{k}" in report["metrics"]
    for key in (
        "mrr",
        "set_precision",
        "set_recall",
        "set_f1",
        "set_exact_match",
        "latency_ms_p50",
        "latency_ms_p95",
    ):
        assert key in report["metrics"]
    assert "requirements" not in report  # per-requirement answers only in --out's report.json
    assert report_dict(_run(), include_requirements=True)["requirements"][0]["id"] == "q1"
    assert report["index"] == {"version": "idx-1"}  # nested manifest parts left out


def test_printed_tables_and_plot(tmp_path: Path) -> None:
    console = Console(record=True, width=140)
    print_report(_run(), console)
    text = console.export_text()
    assert "all-gold (model)" in text and "always top-2" in text and "recall + coarse" in text
    files = write_outputs(_run(), tmp_path / "out")
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files["report"].read_text())["requirements"]


def test_mlflow_run_has_params_metrics_and_artifacts(tmp_path: Path) -> None:
    settings = Settings(
        mlflow=MlflowConfig(
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "art")
        )
    )
    files = write_outputs(_run(), tmp_path / "out")
    run_id = log_mlflow(_run(), settings, files)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        metrics = dict(db.execute("select key, value from metrics where run_uuid = ?", (run_id,)).fetchall())
        params = dict(db.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall())
    assert metrics["all_gold_at_5"] == _run().metrics["all_gold_at_5"]
    assert "rrf_mrr" in metrics and "top2_set_f1" in metrics
    assert not any("@" in key for key in metrics)
    assert params["setting"] == "union" and params["coarse_model"] == "logreg"
    assert {p.name for p in (tmp_path / "art").rglob("*") if p.is_file()} >= {
        "recall_at_k.png",
        "report.json",
    }
