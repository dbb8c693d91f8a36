"""One lake change, three entry points, the same decisions.

A project of three businesses is run once (ingested, indexed; `game` and `shop` trained, `game`'s
challenger judged by the gate; `club` has no labelled requirement), then `game` gets a new labelled
requirement. Three copies of that project go through `assetmatch -c CONFIG nightly` (the CLI), the
demo's ingest/index/train/promote steps and the `nightly` flow. Ingest and every decision run for
real; the parts that take minutes (index build, training, the gate) are stand-ins that record that
an entry point chose to run them. The decisions must be the pipeline's, the same for all three:
the index is rebuilt because `requirements` moved, features skip (disabled), the shared adapter
retrains on `game` and `shop`, `game` retrains, `shop` is left alone (data unchanged) and so is
`club` (no labelled requirements), and only `shop`'s unjudged challenger goes to the gate. An entry
point with a rule of its own (training every labelled business, gating every challenger, building
the index only when asked) would run other parts, or give other reasons, and fail this test."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from test_ingest_flow import load_flow_module
from tiny_project import add_requirement, copy_project, write_project
from typer.testing import CliRunner

from assetmatch import pipeline
from assetmatch.config import Settings, load_settings
from assetmatch.matching.fine import FineCalibration

pytestmark = pytest.mark.integration

ENTRY_POINTS = ("cli", "demo", "flow")


def _baseline(root: Path) -> Path:
    """The project after its first nights, then the change: a new labelled requirement for `game`."""
    config = write_project(root, ["game", "shop"], ["club"], shared_adapter=False)  # faster first night
    settings = load_settings(config)
    for stage in (pipeline.ingest_stage(settings), pipeline.index_stage(settings)):
        assert stage.status == "ran", stage
    for business in ("game", "shop"):
        pipeline.train_one(settings, business)
    pipeline.promote_one(settings, "game")  # `shop`'s challenger waits for the gate
    config.write_text(config.read_text().replace("shared_adapter: false", "shared_adapter: true"))
    add_requirement(
        root, "game", "active minutes of the paying users", ["dws_active_users_1d", "dws_paying_users_1d"]
    )
    return config


class StandIns:
    """The slow parts, as each entry point calls them, recorded as (kind, business or businesses) under
    the entry point whose copy of the project (its lake) they were called for."""

    def __init__(self, copies: dict[str, Path]) -> None:
        self.by_lake = {str(root / "lake"): name for name, root in copies.items()}
        self.calls: dict[str, list[tuple[str, str]]] = {name: [] for name in copies}

    def record(self, settings: Settings, kind: str, what: str | Sequence[str] = "") -> None:
        self.calls[self.by_lake[settings.lake.uri]].append(
            (kind, what if isinstance(what, str) else ",".join(what))
        )

    # the pipeline's parts (the CLI and the flow call these)
    def build_and_fit(self, settings: Settings, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.record(settings, "index")
        manifest = pipeline.published_manifest(settings)  # what the copied lake's index looks like
        assert manifest is not None
        return {**manifest, "fit": {}}

    def train_shared(self, settings: Settings, businesses: Sequence[str]) -> dict[str, Any]:
        self.record(settings, "train-shared", sorted(businesses))
        return {"business": "shared adapter", "version": "9", "steps": 1}

    def train_one(self, settings: Settings, business: str) -> dict[str, Any]:
        self.record(settings, "train", business)
        return {"business": business, "version": "9", "steps": 1}

    def promote_one(self, settings: Settings, business: str) -> dict[str, Any]:
        self.record(settings, "gate", business)
        return {"business": business, "verdict": "refuse", "reason": "stand-in", "promoted": False,
                "chosen": "baseline", "champion_version": None, "challenger_version": "1",
                "markdown": "stand-in", "summary": "v1 not promoted (stand-in)"}  # fmt: skip

    # what the demo's train step calls (with the same plans), returning what it prints
    def run_shared_training(self, settings: Settings, businesses: Sequence[str], **_: Any) -> tuple[Any, str]:
        self.record(settings, "train-shared", sorted(businesses))
        return _training_result(), "9"

    def run_training(self, settings: Settings, business: str, **_: Any) -> tuple[Any, str]:
        self.record(settings, "train", business)
        return _training_result(), "9"


def _training_result() -> Any:
    scores = SimpleNamespace(means=lambda: {"all_gold_at_3": 0.0, "set_f1": 0.0})
    return SimpleNamespace(
        fit=SimpleNamespace(steps=1, best_step=1),
        reports={"challenger": scores, "coarse_only": scores},
        calibration=FineCalibration(),  # what the summary line reads the cascade from
    )


def _decisions(stages: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str, list[str]]]:
    """Per stage: ran / skipped / failed, why, and the per-business lines (verdicts, who was left
    alone and why), without the flow's line on where training ran (the CLI always trains here)."""
    return {
        s["stage"]: (s["status"], s["reason"], [n for n in s["notes"] if not n.startswith("trained ")])
        for s in stages
    }


@pytest.mark.timeout(900)  # ~2 min on an idle machine
def test_cli_demo_and_flow_take_the_same_decisions(
    tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assetmatch.cli import app
    from assetmatch.demo import pipeline as demo
    from assetmatch.demo.warehouse import DemoPaths

    base = tmp_path / "base"
    _baseline(base)
    copies = {name: tmp_path / name for name in ENTRY_POINTS}
    configs = {name: copy_project(base, root) for name, root in copies.items()}
    parts = StandIns(copies)
    for name in ("build_and_fit", "train_shared", "train_one", "promote_one"):
        monkeypatch.setattr(pipeline, name, getattr(parts, name))
    for name in ("build_and_fit", "run_shared_training", "run_training"):
        monkeypatch.setattr(demo, name, getattr(parts, name))

    # (a) the CLI
    cli = CliRunner().invoke(app, ["-c", str(configs["cli"]), "nightly", "--json"])
    assert cli.exit_code == 0, cli.output
    cli_stages = json.loads(cli.stdout)["stages"]

    # (b) the demo's steps, on its own copy
    paths = DemoPaths(copies["demo"], configs["demo"], date.today(), 0, ("game", "shop", "club"))
    ctx = demo.DemoContext(dir=copies["demo"], paths=paths, console=Console(file=io.StringIO()))
    steps = {
        r.name: r.summary
        for r in demo.run_steps(ctx, only=["ingest", "index", "train", "promote"], show_progress=False)
    }

    # (c) the nightly flow
    state = load_flow_module("nightly").nightly(config_path=str(configs["flow"]), return_state=True)
    assert state.is_completed(), state.message
    flow_stages = state.result()["stages"]

    # the decisions, as the pipeline's rules give them for this change
    decided = _decisions(cli_stages)
    assert decided["ingest"][:2] == ("ran", "rows written: requirements 1")
    assert decided["indexes"][0] == "ran" and decided["indexes"][1].startswith("lake changed: requirements v")
    assert decided["features"] == ("skipped", "features disabled (feast.enabled: false)", [])
    assert decided["train"] == ("ran", "trained: game, shared adapter", [
        "game: trained v9", "shared adapter: trained v9", "club: left alone: no labelled requirements",
        decided["train"][2][3],
    ])  # fmt: skip
    assert decided["train"][2][3].startswith("shop: left alone: data unchanged (fingerprint ")
    assert decided["promote"] == ("ran", "promoted: none; refused: shop", [
        "shop: refused challenger v1: stand-in", "club: left alone: no challenger",
        "game: left alone: challenger v1 already judged",
    ])  # fmt: skip
    # the same through the flow: stage by stage, with the same reasons and per-business lines
    assert _decisions(flow_stages) == decided
    # and the same parts run, in the same order, by all three entry points
    expected = [("index", ""), ("train-shared", "game,shop"), ("train", "game"), ("gate", "shop")]
    assert parts.calls == {name: expected for name in ENTRY_POINTS}, parts.calls
    # the demo's summaries give the pipeline's reasons for what it left alone
    for line in ("club: no labelled requirements", decided["train"][2][3].replace("left alone: ", "")):
        assert line in steps["train"], steps["train"]
    assert steps["promote"].startswith("shop: v1 not promoted (stand-in)"), steps["promote"]
