"""End to end on a real Delta lake and SQLite MLflow: train -> register challenger -> A/B gate ->
promotions table + MLflow tags -> manual promote / rollback -> `assetmatch models list`.

Tiny on purpose (two steps, max_length 32): it checks the wiring and the records, not quality.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from assetmatch.config import Settings, load_settings
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import Column, TableAsset

pytestmark = pytest.mark.integration

TABLES = {
    "dws_active_users_1d": ("daily active users", ["dt", "user_id", "active_minutes"]),
    "dws_paying_users_1d": ("daily paying users", ["dt", "user_id", "pay_amount"]),
    "dim_item": ("item catalogue", ["item_id", "item_name", "price"]),
    "dwd_orders": ("order details", ["order_id", "item_id", "user_id", "amount"]),
}
REQUIREMENTS = [
    ("how many active users yesterday", ["dws_active_users_1d"]),
    ("active minutes per user", ["dws_active_users_1d"]),
    ("total pay amount of paying users", ["dws_paying_users_1d"]),
    ("number of paying users per day", ["dws_paying_users_1d"]),
    ("price of every item", ["dim_item"]),
    ("order amount by item name", ["dwd_orders", "dim_item"]),
    ("orders per user", ["dwd_orders"]),
    ("which items are the most expensive", ["dim_item"]),
    ("paying users who were active", ["dws_paying_users_1d", "dws_active_users_1d"]),
    ("amount of each order", ["dwd_orders"]),
]


def make_settings(tmp_path: Path, businesses: list[str], **training: Any) -> Settings:
    cfg = load_settings(
        None,
        lake={"uri": str(tmp_path / "lake")},
        businesses=[{"name": b} for b in businesses],
        mlflow={
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "artifact_location": str(tmp_path / "mlartifacts"),
        },
        ranker={"device": "cpu", "max_length": 32, "quantize": "none"},
        training={
            "adapters_dir": str(tmp_path / "adapters"),
            "ranker": {
                "max_steps": 2,
                "batch_size": 4,
                "max_length": 32,
                "candidate_k": 3,
                "max_validation": 6,
                "validation_fraction": 0.4,
                "synthetic_per_table": 1,
            },
            **training,
        },
        promotion={"bootstrap_samples": 200, "latency_budget_ms": 600_000},
    )
    lake = Lake(cfg.lake.uri)
    assets = [
        TableAsset(business=b, name=name, comment=comment, columns=[Column(name=c) for c in cols])
        for b in businesses
        for name, (comment, cols) in TABLES.items()
    ]
    lake.merge_assets(assets, run_id="seed")
    now = datetime.now(UTC)
    lake.upsert(
        T.REQUIREMENTS,
        [
            {
                "id": f"{b}-r{i}",
                "business": b,
                "text": text,
                "gold_assets": [f"{b}.{g}" for g in gold],
                "split": "train",
                "ts": now,
                "sql": None,
                "source": "test",
                "run_id": "seed",
            }
            for b in businesses
            for i, (text, gold) in enumerate(REQUIREMENTS)
        ],
        run_id="seed",
    )
    return cfg


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    return make_settings(tmp_path, ["game"])


def test_train_gate_record_and_roll_back(settings: Settings) -> None:
    from assetmatch.registry.mlflow import Registry
    from assetmatch.registry.promotion import evaluate_and_promote, manual_alias_change
    from assetmatch.registry.training import plan_training, run_training

    registry = Registry.from_settings(settings)
    [plan] = plan_training(settings)
    assert plan.changed and plan.labelled == len(REQUIREMENTS)

    result, v1 = run_training(settings, "game")
    assert v1 == "1" and str(registry.version_by_alias("game", "challenger").version) == "1"  # type: ignore[union-attr]
    assert (result.adapter_dir / "calibration.json").exists()
    [plan] = plan_training(settings)
    assert not plan.changed  # nothing new since the logged run: the flow would skip it

    # first adapter: judged against coarse-only, and the decision is recorded everywhere
    outcome = evaluate_and_promote(settings, "game")
    rows = Lake(settings.lake.uri).read_arrow(T.PROMOTIONS).to_pylist()
    assert [(r["verdict"], r["challenger_version"], r["champion_version"]) for r in rows] == [
        (outcome.decision.verdict, "1", "")
    ]
    assert json.loads(rows[0]["metrics"])["first_adapter"] is True
    tags = registry.client.get_model_version(registry.model_name("game"), "1").tags
    assert tags["gate.verdict"] == outcome.decision.verdict
    champion = registry.version_by_alias("game", "champion")
    assert (champion is not None) == (outcome.decision.verdict == "promote")

    if champion is None:
        manual_alias_change(settings, "game", "1", "promote", "seed the champion")
    result2, v2 = run_training(settings, "game")
    assert v2 == "2" and "champion" in result2.reports  # the champion was evaluated before training
    outcome2 = evaluate_and_promote(settings, "game")
    assert outcome2.champion_version == "1" and outcome2.challenger_version == "2"
    if outcome2.decision.verdict == "refuse":
        assert str(registry.version_by_alias("game", "champion").version) == "1"  # type: ignore[union-attr]
        manual_alias_change(settings, "game", "2", "promote", "by hand")
    assert str(registry.version_by_alias("game", "previous").version) == "1"  # type: ignore[union-attr]
    assert manual_alias_change(settings, "game", None, "rollback", "bad numbers") == "1"
    with pytest.raises(ValueError, match="already the champion"):
        manual_alias_change(settings, "game", "1", "promote", "")
    with pytest.raises(ValueError, match="no version 9"):
        manual_alias_change(settings, "game", "9", "promote", "")
    rows = sorted(Lake(settings.lake.uri).read_arrow(T.PROMOTIONS).to_pylist(), key=lambda r: r["ts"])
    verdicts = [r["verdict"] for r in rows]
    assert verdicts[-1] == "manual-rollback" and len(verdicts) >= 3

    import yaml

    from assetmatch.cli import app

    cfg_file = Path("assetmatch.yaml")  # the CLI reads the same lake and registry from a config file
    cfg_file.write_text(
        yaml.safe_dump({"lake": {"uri": settings.lake.uri}, "mlflow": settings.mlflow.model_dump()})
    )
    out = CliRunner().invoke(
        app, ["--config", str(cfg_file), "models", "list", "--business", "game"], env={"COLUMNS": "250"}
    )
    assert out.exit_code == 0, out.output
    assert "champion" in out.output and "assetmatch-ranker-game" in out.output
    bad = CliRunner().invoke(app, ["--config", str(cfg_file), "models", "rollback", "--business", "nobody"])
    assert bad.exit_code == 2 and "no 'previous' version" in bad.output


def test_shared_adapter_then_per_business_and_the_three_way_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two businesses: the train stage trains the shared adapter first (with its own step budget,
    `training.shared_ranker`), each business's adapter starts from it and the shared one is
    registered for it too; the gate judges both arms."""
    from assetmatch import pipeline
    from assetmatch.registry.mlflow import Registry
    from assetmatch.registry.promotion import evaluate_and_promote

    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path, ["game", "shop"], shared_ranker={"max_steps": 1})
    stage = pipeline.train_stage(settings)
    assert stage.status == "ran", stage.failures
    outcomes = stage.details["outcomes"]
    assert set(outcomes) == {"shared adapter", "game", "shop"}
    assert outcomes["shared adapter"]["steps"] == 1 and outcomes["game"]["steps"] == 2
    registry = Registry.from_settings(settings)
    assert registry.version_by_alias("_shared", "current") is not None
    assert registry.businesses() == ["game", "shop"]  # the shared adapter is not a business
    for business in ("game", "shop"):
        own = registry.version_by_alias(business, "challenger")
        shared = registry.version_by_alias(business, "challenger-shared")
        assert own is not None and shared is not None
        assert own.tags["ranker.kind"] == "business-from-shared" and shared.tags["ranker.kind"] == "shared"
    shared_version = registry.version_by_alias("game", "challenger-shared").version  # type: ignore[union-attr]
    outcome = evaluate_and_promote(settings, "game")
    assert outcome.chosen in ("baseline", "shared", "per_business")
    assert "Three-way choice" in outcome.markdown
    # what a person reads: the shared adapter's evidence too, where its verdict is not the one reported
    shown = f"; shared v{shared_version} " in outcome.summary()
    assert shown == (outcome.chosen != "shared"), outcome.summary()
    for version in registry.versions("game"):  # both arms judged: neither waits for the gate again
        assert "gate.verdict" in version.tags
    assert pipeline.plan_promotion(settings, ["game"]).todo == []


def test_the_gate_takes_the_lists_training_scored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training keeps what it scored with each adapter (the kept checkpoint's check, the shared
    adapter judged for the business), and it travels with the adapter through MLflow: the gate,
    on the same machine and threads, takes those lists and never loads a model to score them again."""
    from assetmatch import pipeline
    from assetmatch.registry import promotion
    from assetmatch.training.recorded import SCORES_FILE

    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path, ["game", "shop"], shared_ranker={"max_steps": 1})
    # serving's threads, pinned as a deployment pins them: every judging of an adapter runs on them
    settings.serving.torch_threads = 1
    loads: list[str] = []
    real = promotion.LoraFineRanker.from_folders

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append("load")
        return real(*args, **kwargs)

    assert pipeline.train_stage(settings).status == "ran"
    monkeypatch.setattr(promotion.LoraFineRanker, "from_folders", counting)
    outcome = promotion.evaluate_and_promote(settings, "game", cache_dir=str(tmp_path / "gate"))
    assert loads == [] and outcome.chosen in ("baseline", "shared", "per_business")
    downloaded = sorted(p.parent.name for p in (tmp_path / "gate" / "game").glob(f"*/{SCORES_FILE}"))
    assert len(downloaded) == 2  # the business's adapter and the shared one, each with its record


def test_cli_train_trains_the_shared_adapter_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`assetmatch train` takes the nightly train stage's decisions: the shared adapter first
    (two businesses with labelled requirements), then each business's adapter from it; `--no-shared`
    keeps the registered shared adapter; unchanged data is skipped unless `--force`."""
    import yaml

    from assetmatch.cli import app
    from assetmatch.registry.mlflow import Registry

    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path, ["game", "shop"], shared_ranker={"max_steps": 1})
    cfg_file = tmp_path / "assetmatch.yaml"
    cfg_file.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_defaults=True)))
    registry = Registry.from_settings(settings)

    first = CliRunner().invoke(app, ["-c", str(cfg_file), "train"], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    assert "shared adapter" in first.output and "game, shop" in first.output
    assert first.output.count("cascade: ") == 2  # when each business's adapter will be asked
    shared = registry.version_by_alias("_shared", "current")
    assert shared is not None and str(shared.version) == "1"
    for business in ("game", "shop"):
        own = registry.version_by_alias(business, "challenger")
        assert own is not None and own.tags["ranker.kind"] == "business-from-shared"
    game_before = int(registry.version_by_alias("game", "challenger").version)  # type: ignore[union-attr]

    again = CliRunner().invoke(app, ["-c", str(cfg_file), "train"], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "game: skipped, data unchanged" in again.output and "--force to train" in again.output
    assert str(registry.version_by_alias("_shared", "current").version) == "1"  # type: ignore[union-attr]

    forced = CliRunner().invoke(app, ["-c", str(cfg_file), "train", "--force", "--no-shared", "-b", "game"])
    assert forced.exit_code == 0, forced.output
    assert str(registry.version_by_alias("_shared", "current").version) == "1"  # type: ignore[union-attr]
    game = registry.version_by_alias("game", "challenger")
    assert game is not None and int(game.version) > game_before
    assert game.tags["ranker.kind"] == "business-from-shared"  # from the registered shared adapter


def test_a_coarse_refit_after_training_marks_the_calibration_stale(settings: Settings) -> None:
    """The adapter's calibration was fitted on the coarse lists of the fit its training read: once
    another coarse fit is published, the train stage says so (data unchanged, calibration stale), and
    with `training.retrain_on_coarse_refit` it retrains."""
    from assetmatch import pipeline
    from assetmatch.matching.matcher import COARSE_FILE, SELECTION_FILE, coarse_fit_digest, models_dir
    from assetmatch.registry.mlflow import COARSE_TAG, Registry
    from assetmatch.registry.training import run_training

    run_training(settings, "game")  # no coarse fit published: BM25 candidates
    assert Registry.from_settings(settings).last_training_tags("game")[COARSE_TAG] == "none"
    assert pipeline.plan_train(settings).kept["game"].startswith("data unchanged (fingerprint")

    folder = models_dir(settings)
    folder.mkdir(parents=True)  # a coarse fit published after the training (the plan reads only its bytes)
    (folder / COARSE_FILE).write_bytes(b"coarse model fitted after the adapter was trained")
    (folder / SELECTION_FILE).write_text("{}", encoding="utf-8")
    assert coarse_fit_digest(settings) != "none"
    plan = pipeline.plan_train(settings)
    assert plan.todo == [] and "calibration is stale" in plan.kept["game"]
    retrain = settings.model_copy(
        update={"training": settings.training.model_copy(update={"retrain_on_coarse_refit": True})}
    )
    assert pipeline.plan_train(retrain).todo == ["game"]
