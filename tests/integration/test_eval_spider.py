"""`assetmatch eval` end to end on the Spider data in ../shared: sources -> temporary lake -> indexes ->
fit on a bounded train sample -> match 50 dev requirements -> report, plot and MLflow run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assetmatch.cli import app

pytestmark = pytest.mark.integration

KS = (1, 3, 5, 10, 15, 20)


def test_eval_limit_50_end_to_end(tmp_path: Path, shared_benchmarks: Path) -> None:
    benchmarks = shared_benchmarks
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        f"mlflow:\n  tracking_uri: sqlite:///{tmp_path}/mlflow.db\n  artifact_location: {tmp_path}/mlartifacts\n",
        encoding="utf-8",
    )
    report_path = tmp_path / "report.json"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "--config", str(config), "eval",
            "--dataset", str(benchmarks / "spider"), "--split", "dev", "--setting", "union",
            "--limit", "50", "--fit-limit", "150",
            "--json", str(report_path), "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "all-gold" in result.output and "always top-2" in result.output

    report = json.loads(report_path.read_text())
    assert (report["dataset"], report["split"], report["setting"], report["n_requirements"]) == (
        "spider",
        "dev",
        "union",
        50,
    )
    metrics = report["metrics"]
    for k in KS:
        assert 0.0 <= metrics[f"all_gold_at_{k}"] <= metrics[f"recall_at_{k}"] <= 1.0
    for name in ("mrr", "set_precision", "set_recall", "set_f1", "set_exact_match"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["latency_ms_p50"] > 0 and metrics["latency_ms_p95"] >= metrics["latency_ms_p50"]
    # recall@k cannot decrease with k, and the fused ranking finds something on Spider
    assert [metrics[f"recall_at_{k}"] for k in KS] == sorted(metrics[f"recall_at_{k}"] for k in KS)
    assert metrics["recall_at_20"] > 0.5
    fit = report["fit"]
    # 150 sampled labels, blended with every synthetic requirement (fewer labels than m = 500)
    assert fit["trained"] and fit["trained_on"] == "blended" and fit["n_labelled"] == 150
    assert fit["n_train_requirements"] == 150 + fit["n_synthetic"] and fit["n_synthetic"] > 2000

    full = json.loads((out / "report.json").read_text())
    assert len(full["requirements"]) == 50
    assert all(row["gold"] and row["ranked"] for row in full["requirements"])
    assert (out / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        keys = {row[0] for row in db.execute("select key from metrics")}
    assert {"recall_at_5", "all_gold_at_5", "set_f1", "latency_ms_p95"} <= keys
    assert list((tmp_path / "mlartifacts").rglob("recall_at_k.png"))


def test_eval_refuses_a_bad_dataset_and_split(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--dataset", str(tmp_path), "--no-mlflow"])
    assert result.exit_code == 2
    assert "assets.jsonl.gz is missing" in result.output
