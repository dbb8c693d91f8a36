"""The demo's step registry and the `assetmatch demo` command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from assetmatch.cli import app
from assetmatch.demo import pipeline
from assetmatch.demo.pipeline import (
    STEPS_FILE,
    DemoContext,
    run_steps,
    select_steps,
    step,
    step_names,
    timing_table,
)
from assetmatch.serving.threads import THREAD_VARIABLES, default_threads, limit_threads_before_load


def test_steps_are_ordered_and_generate_comes_first() -> None:
    names = step_names()
    assert names[0] == "generate"
    assert len(names) == len(set(names))
    assert all(s.description for s in pipeline.STEPS)


def test_unknown_or_duplicate_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown demo step"):
        select_steps(["generate", "teleport"])
    with pytest.raises(ValueError, match="registered twice"):
        step("generate", "again")(lambda ctx: "")


def test_run_only_generate_records_paths_and_timings(tmp_path: Path) -> None:
    ctx = DemoContext(
        dir=tmp_path / "demo", reference_date="2026-03-01", console=Console(file=None, quiet=True)
    )
    results = run_steps(ctx, only=["generate"], show_progress=False)
    assert [r.name for r in results] == ["generate"]
    assert results[0].seconds > 0 and "3 games" in results[0].summary
    assert ctx.paths is not None and ctx.paths.config.exists()
    assert ctx.settings.business_names() == ["moba", "farm", "card"]
    assert timing_table(results).row_count == 2  # the step and the total


def test_later_steps_alone_need_a_generated_folder(tmp_path: Path) -> None:
    later = [n for n in step_names() if n != "generate"]
    if not later:
        pytest.skip("no step after generate is registered yet")
    ctx = DemoContext(dir=tmp_path / "empty", console=Console(quiet=True))
    with pytest.raises(FileNotFoundError, match="no generated demo"):
        run_steps(ctx, only=later[:1], show_progress=False)


def test_thread_caps_respect_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice wins
    limit_threads_before_load(3)
    assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["MKL_NUM_THREADS"] == "3"
    assert 1 <= default_threads() <= 4


def test_cli_demo_generate_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in THREAD_VARIABLES:  # the command caps thread pools; keep that inside this test
        monkeypatch.setenv(name, "1")
    runner = CliRunner()
    target = tmp_path / "cli-demo"
    listed = runner.invoke(app, ["demo", "--list-steps"])
    assert listed.exit_code == 0 and "generate" in listed.output
    ok = runner.invoke(
        app,
        ["demo", "--dir", str(target), "--step", "generate", "--reference-date", "2026-03-01", "--seed", "3"],
    )
    assert ok.exit_code == 0, ok.output
    assert (target / "assetmatch.yaml").exists() and (target / "warehouse" / "moba" / "dw.db").exists()
    assert "generate" in ok.output
    recorded = json.loads((target / STEPS_FILE).read_text(encoding="utf-8"))
    assert [s["name"] for s in recorded["steps"]] == ["generate"]
    assert recorded["steps"][0]["seconds"] > 0 and "3 games" in recorded["steps"][0]["summary"]
    assert recorded["total_seconds"] == round(recorded["steps"][0]["seconds"], 1)
    bad_date = runner.invoke(app, ["demo", "--dir", str(target), "--reference-date", "03/01/2026"])
    assert bad_date.exit_code == 2 and "not an ISO date" in bad_date.output
    bad_step = runner.invoke(app, ["demo", "--dir", str(target), "--step", "teleport"])
    assert bad_step.exit_code == 2 and "unknown demo step" in bad_step.output
    assert (target / "assetmatch.yaml").exists()  # a refused run deletes nothing


def test_a_sample_says_who_answered_it() -> None:
    """The adapter with the tables it scored, or the coarse ranking and why the adapter did not run."""
    assert pipeline.answered_by("moba:3", 4, "") == "adapter moba:3: 4 tables fine-ranked"
    assert pipeline.answered_by("2", 3, "") == "adapter v2: 3 tables fine-ranked"  # served: registry version
    skipped = "cascade: the coarse answer is certain, or its list holds a table of a database the adapter did not learn"
    assert pipeline.answered_by("learned", 0, skipped) == (
        "coarse ranking (the coarse answer is certain, or its list holds a table of a database the adapter did not learn)"
    )
    assert pipeline.answered_by("learned", 0, "") == "coarse ranking (no adapter promoted)"


def _answer(selected: list[str], depth: int) -> pipeline.SampleAnswer:
    who = pipeline.answered_by("card:1", depth, "" if depth else "cascade: the coarse answer is certain")
    return pipeline.SampleAnswer(selected, selected, [], who, depth, adapter=True)


def test_a_promoted_games_test_split_is_scored_as_served_next_to_coarse_only() -> None:
    """Set F1 / exact of the served answers against gold, the fine-ranked ones kept as examples, and
    the evaluate step's coarse-only figures beside them in the summary line."""
    texts = ["a", "b", "c"]
    golds = [["t1"], ["t1", "t2"], ["t3"]]
    answers = [_answer(["t1"], 3), _answer(["t1"], 0), _answer(["t3", "t4"], 5)]
    result = pipeline.served_tests("card", texts, answers, golds, {"set_f1": 0.5, "set_exact_match": 0.25})
    assert (result.n, result.fine_ranked) == (3, 2)
    assert [text for text, _, _ in result.examples] == ["a", "c"]
    assert result.examples[1][2] == ["t3"]
    assert result.served["set_exact_match"] == pytest.approx(1 / 3)
    assert result.served["set_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert result.line() == (
        "card test split as served: 2 of 3 fine-ranked, set F1 0.500 -> 0.778, exact 0.250 -> 0.333"
    )
    alone = pipeline.served_tests("card", texts, answers, golds, None)  # evaluate did not run
    assert alone.line() == "card test split as served: 2 of 3 fine-ranked, set F1 0.778, exact 0.333"
    with pytest.raises(ValueError):
        pipeline.served_tests("card", texts[:2], answers, golds, None)
