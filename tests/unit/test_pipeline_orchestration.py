"""What the pipeline gives orchestrators: which errors are worth a retry, the config a scheduled run
must have, and a summary that says what ran, what skipped itself and why, what failed, and the
gate's verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from assetmatch import pipeline
from assetmatch.config import ConfigError, load_settings
from assetmatch.ingest import IngestError
from assetmatch.pipeline import NightlyResult, StageResult
from assetmatch.sources.sql import SourceConnectionError


# ---- retries ----------------------------------------------------------------------------------------
def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (SourceConnectionError("cannot connect to db:5432 (3 attempt(s)): connection refused"), True),
        (SourceConnectionError("password authentication failed for user 'reader'", transient=False), False),
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (_chained(RuntimeError("extract failed"), ConnectionResetError("reset")), True),
        # the source's own mark wins over a network error further down the chain
        (_chained(SourceConnectionError("role x does not exist", transient=False), ConnectionError()), False),
        (IngestError("assets: 9 of 10 rows failed validation"), False),
        (ConfigError("sources.crm.options.path: missing"), False),
        (FileNotFoundError("catalog.jsonl"), False),
        (ValueError("bad plugin"), False),
    ],
)
def test_only_errors_marked_transient_are_retried(error: BaseException, transient: bool) -> None:
    assert pipeline.is_transient(error) is transient


class _State:
    """The two things `retry_if_transient` and `outcome` read from a Prefect state."""

    def __init__(self, value: Any, completed: bool, name: str = "Failed", message: str = "") -> None:
        self.value, self.completed, self.name, self.message = value, completed, name, message

    def result(self, raise_on_failure: bool = True) -> Any:
        assert raise_on_failure is False
        return self.value

    def is_completed(self) -> bool:
        return self.completed


def test_retry_condition_reads_the_failed_state() -> None:
    refused = SourceConnectionError("Access denied for user", transient=False)
    assert not pipeline.retry_if_transient(None, None, _State(refused, completed=False))
    assert pipeline.retry_if_transient(None, None, _State(ConnectionRefusedError(), completed=False))


def test_outcome_of_a_state() -> None:
    assert pipeline.outcome(_State({"ok": 1}, completed=True)) == {"ok": 1}
    error = ValueError("boom")
    assert pipeline.outcome(_State(error, completed=False)) is error
    crashed = pipeline.outcome(_State(None, completed=False, name="Crashed", message="worker lost"))
    assert isinstance(crashed, RuntimeError) and "Crashed: worker lost" in str(crashed)


# ---- the config a scheduled run uses ------------------------------------------------------------------
def test_a_run_without_config_fails_with_a_clear_message(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSETMATCH_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="no config: set the run's config_path"):
        pipeline.settings_for_run(None)
    with pytest.raises(ConfigError, match=r"missing\.yaml \(config_path\) does not exist"):
        pipeline.config_file("missing.yaml")
    monkeypatch.setenv("ASSETMATCH_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"gone\.yaml \(\$ASSETMATCH_CONFIG\) does not exist"):
        pipeline.config_file(None)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_config_from_argument_env_or_working_directory(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSETMATCH_CONFIG", raising=False)
    here = tmp_path / "assetmatch.yaml"
    here.write_text("businesses: [{name: a}]\n")
    other = tmp_path / "other.yaml"
    other.write_text("businesses: [{name: b}]\n")
    assert pipeline.config_file(None) == here
    assert pipeline.config_file("other.yaml") == other  # absolute, whatever the run's directory later
    monkeypatch.setenv("ASSETMATCH_CONFIG", str(other))
    assert pipeline.settings_for_run(None).business_names() == ["b"]


# ---- ingest with nothing to ingest ------------------------------------------------------------------
def test_ingest_without_sources_fails(tmp_path: Path) -> None:
    config = tmp_path / "assetmatch.yaml"
    config.write_text(yaml.safe_dump({"lake": {"uri": str(tmp_path / "lake")}}))
    result = pipeline.ingest_stage(load_settings(config))
    assert result.status == "failed" and "no sources configured" in result.failures["stage"]
    assert pipeline.ingest_result([], 0.0).status == "failed"
    assert not (tmp_path / "lake").exists()


# ---- the summary --------------------------------------------------------------------------------------
def _gate(promoted: bool, reason: str) -> dict[str, Any]:
    return {"verdict": "promote" if promoted else "refuse", "promoted": promoted, "reason": reason,
            "challenger_version": "2"}  # fmt: skip


def test_promotion_summary_gives_verdicts_not_just_that_the_gate_ran() -> None:
    outcomes: dict[str, Any] = {
        "card": _gate(False, "challenger not better: all-gold@3 -0.02 [-0.05, 0.01]"),
        "farm": _gate(False, "p95 latency 310 ms over the 200 ms budget"),
        "moba": _gate(False, "too few held-out requirements (3 < 20)"),
    }
    result = pipeline.promote_result(outcomes, {"shop": "no challenger"}, 2.0)
    assert result.status == "ran"
    assert result.reason == "promoted: none; refused: card, farm, moba"
    assert result.counts == {"promoted": 0, "refused": 3, "failed": 0, "unchanged": 1}
    assert (
        "card: refused challenger v2: challenger not better: all-gold@3 -0.02 [-0.05, 0.01]" in result.notes
    )
    assert "shop: left alone: no challenger" in result.notes
    # where the gate judged the shared adapter too and chose neither, its evidence follows
    shared = "shared v1 refuse: set_f1 +0.013 [+0.000, +0.031], set F1 changed on 3 (3 better, 0 worse)"
    both = pipeline.promote_result({"moba": {**_gate(False, "not better"), "shared": shared}}, {}, 1.0)
    assert both.notes == [f"moba: refused challenger v2: not better; {shared}"]

    mixed = pipeline.promote_result(
        {"card": _gate(True, "better"), "farm": RuntimeError("MLflow down")}, {}, 1.0
    )
    assert mixed.status == "failed" and mixed.reason == "promoted: card; failed: farm"
    assert mixed.failures == {"farm": "RuntimeError: MLflow down"}


def test_summary_table_stays_narrow_and_details_follow_it() -> None:
    long_reason = "lake changed: assets v3 → v4, glossary v1 → v2, query_log v7 → v9, requirements v2 → v3"
    result = NightlyResult(
        [
            StageResult("ingest", "failed", "1 of 2 source(s) failed: crm", {"sources": 2}, 0.4,
                        {"crm": "FileNotFoundError: crm.jsonl\nsecond line"}, notes=["terms: glossary 1 written"]),
            StageResult("indexes", "ran", long_reason, {"assets": 40}, 12.0),
            StageResult("features", "skipped", "lake versions unchanged since the last materialization"),
        ],
        seconds=13.0,
    )  # fmt: skip
    text = result.markdown()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 4 and all(len(line) < 110 for line in table), table
    assert "| indexes | ✅ ran | lake changed: assets v3 → v4, glossary v1 → v2, query_log … |" in text
    assert "| features | ⏭️ skipped | lake versions unchanged since the last materialization |" in text
    assert "- **ingest / crm**: FileNotFoundError: crm.jsonl second line" in text
    assert f"**indexes** (ran): {long_reason}" in text and "- counts: assets 40" in text
    assert "- terms: glossary 1 written" in text
    assert result.failed_parts() == ["ingest/crm"]


def test_train_result_says_who_was_trained_and_who_left_alone() -> None:
    result = pipeline.outcome_result(
        "train", {"card": {"version": "3"}}, {"farm": "no labelled requirements"}, 5.0, "trained"
    )
    assert result.notes == ["card: trained v3", "farm: left alone: no labelled requirements"]
