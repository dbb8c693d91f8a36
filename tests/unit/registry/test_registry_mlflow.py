"""MLflow registry on SQLite in tmp_path: runs, versions, aliases, fingerprints, downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from assetmatch.ranking.config import RankerConfig
from assetmatch.registry.mlflow import Registry
from assetmatch.training import evaluate as ev
from assetmatch.training.pairs import LabelledRequirement, TrainingData
from assetmatch.training.train import FitStats, TrainResult


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) adapter folder."""
    from assetmatch.ranking.model import load_base, new_adapter, save_adapter

    config = RankerConfig(max_length=32, device="cpu")
    _, base, _ = load_base(config.base, "cpu")
    return save_adapter(new_adapter(base, config), tmp_path_factory.mktemp("ad") / "adapter", config)


def result(adapter: Path, business: str) -> tuple[TrainResult, TrainingData]:
    req = LabelledRequirement("r1", business, "active users", ("g.a",))
    ranked = [ev.Ranked(req, ["g.a", "g.b"], [0.9, 0.2], 3.0)]
    reports = {
        "coarse_only": ev.report("coarse_only", [ev.Ranked(req, ["g.b", "g.a"], None, 0.0)], top_n=1),
        "challenger": ev.report("challenger", ranked, threshold=0.5),
    }
    fit = FitStats(steps=2, seconds=1.0, losses=[0.7, 0.6], pairs=4, pair_kinds={"positive": 2, "hard": 2})
    data = TrainingData(
        business, [req], [req], lake_versions={"assets": 3, "requirements": 1}, fingerprint="fp-1"
    )
    return TrainResult(business, adapter, RankerConfig(max_length=32), fit, 0.5, reports, data.counts()), data


def test_runs_versions_and_aliases(tmp_path: Path, adapter_dir: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), "assetmatch-ranker-")
    assert registry.version_by_alias("game", "champion") is None
    assert registry.last_fingerprint("game") is None

    res, data = result(adapter_dir, "game")
    run1 = registry.log_training("game", res, data, index_manifest="idx-7")
    v1 = registry.register("game", run1)
    run2 = registry.log_training("game", res, data)
    v2 = registry.register("game", run2)
    assert (v1, v2) == ("1", "2")
    assert str(registry.version_by_alias("game", "challenger").version) == "2"  # type: ignore[union-attr]
    registry.set_alias("game", "champion", v1)
    assert [(v.version, v.aliases) for v in registry.versions("game")] == [
        ("2", ["challenger"]),
        ("1", ["champion"]),
    ]
    assert registry.businesses() == ["game"]
    assert registry.last_fingerprint("game") == "fp-1"

    run = registry.client.get_run(run1)
    assert run.data.params["lora_r"] == "8" and run.data.params["index_manifest"] == "idx-7"
    assert run.data.params["data.lake_version.assets"] == "3"
    assert run.data.metrics["challenger.all_gold_at_1"] == 1.0
    assert not any("@" in name for name in run.data.metrics)
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts").as_uri())  # not ./mlruns
    names = {a.path for a in registry.client.list_artifacts(run1)}
    assert {"adapter", "eval_report.json", "ranker_config.json"} <= names

    folder = registry.download_adapter("game", v1, tmp_path / "dl" / "1")
    assert RankerConfig.load(folder).max_length == 32 and (folder / "adapter_model.safetensors").exists()

    registry.log_decision(
        "game", v2, {"verdict": "refuse", "reason": "worse", "decision_id": "d1", "metrics": {"n": 1}}
    )
    tags = registry.client.get_model_version("assetmatch-ranker-game", v2).tags
    assert (
        tags["gate.verdict"] == "refuse" and registry.client.get_run(run2).data.tags["gate.reason"] == "worse"
    )


def test_unknown_version_download_is_a_clear_error(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"))
    with pytest.raises(MlflowException):
        registry.download_adapter("nobody", "1", tmp_path / "x")
    assert registry.versions("nobody") == []


def test_training_run_is_linked_to_its_prefect_run_and_lasts_as_long_as_training(
    tmp_path: Path, adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import prefect.runtime  # noqa: F401  (loaded, as it is in every flow run)

    from assetmatch.tracking import FLOW_RUN_ID_TAG, FLOW_RUN_NAME_TAG

    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), "assetmatch-ranker-")
    res, data = result(adapter_dir, "game")
    outside = registry.client.get_run(registry.log_training("game", res, data))
    assert not any(tag.startswith("prefect.") for tag in outside.data.tags)

    # what prefect.runtime reports inside a flow run (its documented environment overrides)
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__ID", "0f6c2a1e-flow-run")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "nightly-clever-fox")
    started = int(time.time() * 1000) - 90_000  # training began 90 s before it was logged
    run = registry.client.get_run(registry.log_training("game", res, data, started_ms=started))
    assert run.data.tags[FLOW_RUN_ID_TAG] == "0f6c2a1e-flow-run"
    assert run.data.tags[FLOW_RUN_NAME_TAG] == "nightly-clever-fox"
    assert run.info.start_time == started and run.info.status == "FINISHED"
    assert run.info.end_time - run.info.start_time >= 90_000
    found = registry.client.search_runs(
        [run.info.experiment_id], filter_string="tags.`prefect.flow_run_id` = '0f6c2a1e-flow-run'"
    )
    assert [r.info.run_id for r in found] == [run.info.run_id]
