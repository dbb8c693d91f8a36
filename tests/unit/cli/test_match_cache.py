"""What `assetmatch match` keeps between calls (assetmatch.cli.match_cache), on a real Feast SQLite
online store and a real MLflow SQLite registry:

- the stored-feature snapshot equals what Feast answers, is read without Feast while the online store
  and the Feast registry are unchanged, and is taken again when a materialization or an apply changes
  either file (or another index is published, or the cache file is damaged);
- the champion adapter is resolved from MLflow once per registry change: a later call reads no MLflow,
  a new champion or a removed adapter folder is seen at once.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

from assetmatch.cli.match_cache import (
    CHAMPIONS_FILE,
    FEATURES_FILE,
    LazyChampion,
    SnapshotFeatures,
    cache_folder,
    champion_ranker,
    online_features,
)
from assetmatch.config import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[3]


def _lakedata() -> ModuleType:
    """tests/unit/features/feature_lakedata.py: a lake whose feature values are known exactly."""
    spec = importlib.util.spec_from_file_location(
        "feature_lakedata", REPO_ROOT / "tests" / "unit" / "features" / "feature_lakedata.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data = _lakedata()
INDEXED = [data.ORDERS, data.USERS, data.OLD, data.HX]


def _config(root: Path) -> Path:
    """A config file (the subprocess checks read the same settings)."""
    config = root / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lake": {"uri": str(root / "lake")},
                "recall": {"index_root": str(root / "indexes")},
                "feast": {
                    "data_dir": str(root / "feast"),
                    "repo_path": str(REPO_ROOT / "feature_repo"),
                    "project": f"am_test_{uuid.uuid4().hex[:10]}",
                    "history_days": 30,
                },
                "mlflow": {
                    "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                    "artifact_location": str(root / "mlartifacts"),
                },
                "training": {"adapters_dir": str(root / "adapters")},
            }
        )
    )
    return config


def _index(index_id: str = "idx-1") -> Any:
    """What online_features reads of a published index: its id and its tables."""
    return SimpleNamespace(id=index_id, asset_ids=list(INDEXED))


def _in_subprocess(config: Path, code: str, *args: str) -> dict[str, Any]:
    """Run `code` (it sets `answer`) in a fresh interpreter with `settings` loaded from `config`;
    returns the answer and which of feast/mlflow the process imported."""
    script = (
        "import json, sys\n"
        "from types import SimpleNamespace\n"
        "from assetmatch.config import load_settings\n"
        f"settings = load_settings({str(config)!r})\n"
        f"{code}\n"
        "print(json.dumps({'answer': answer, 'imported': sorted(m for m in ('feast', 'mlflow') "
        "if m in sys.modules)}))"
    )
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ---- stored features ------------------------------------------------------------------------------
@pytest.fixture
def materialized(tmp_path: Path) -> Settings:
    """The hand-built lake's features materialized at R+12h into a SQLite online store."""
    from assetmatch.features.store import materialize

    config = _config(tmp_path)
    data.build_lake(str(tmp_path / "lake"))
    settings = load_settings(config)
    materialize(settings, now=data.R + 12 * data.H)
    return settings


def _feast_online(settings: Settings, ids: list[str]) -> dict[str, dict[str, float]]:
    from assetmatch.features.provider import FeastFeatureProvider

    return dict(FeastFeatureProvider(settings, cache_ttl_s=0).online(ids))


def test_the_snapshot_answers_as_feast_until_the_online_store_changes(materialized: Settings) -> None:
    from assetmatch.features.provider import FeastFeatureProvider
    from assetmatch.features.store import materialize

    expected = _feast_online(materialized, INDEXED)
    assert expected[data.ORDERS]["queries_7d"] == data.EXPECTED_AT_R[data.ORDERS]["queries_7d"]

    first = online_features(materialized, _index())
    assert isinstance(first, FeastFeatureProvider)  # no snapshot yet: Feast, and one is taken
    assert (cache_folder(materialized) / FEATURES_FILE).exists()
    second = online_features(materialized, _index())
    assert isinstance(second, SnapshotFeatures)
    assert second.online(INDEXED) == expected
    assert second.feature_names == list(first.feature_names)
    # a table the snapshot does not hold is asked of Feast (defaults for an unknown table)
    assert second.online(["g.brand_new", data.USERS]) == {
        "g.brand_new": _feast_online(materialized, ["g.brand_new"])["g.brand_new"],
        data.USERS: expected[data.USERS],
    }

    # a later materialization sees q7 (R+1h): the online store changes, so does the answer
    materialize(materialized, now=data.R + data.D + 12 * data.H)
    changed = _feast_online(materialized, INDEXED)
    assert changed[data.ORDERS] != expected[data.ORDERS]
    third = online_features(materialized, _index())
    assert isinstance(third, FeastFeatureProvider)
    fourth = online_features(materialized, _index())
    assert isinstance(fourth, SnapshotFeatures)
    assert fourth.online(INDEXED) == changed


def test_the_snapshot_is_taken_again_after_a_feast_apply(materialized: Settings) -> None:
    from assetmatch.features.provider import FeastFeatureProvider
    from assetmatch.features.store import apply_repo, open_store

    online_features(materialized, _index())
    assert isinstance(online_features(materialized, _index()), SnapshotFeatures)
    registry = Path(materialized.feast.data_dir) / "registry.db"
    before = registry.stat()
    apply_repo(open_store(materialized), materialized)
    after = registry.stat()
    assert (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    assert isinstance(online_features(materialized, _index()), FeastFeatureProvider)
    again = online_features(materialized, _index())
    assert isinstance(again, SnapshotFeatures)
    assert again.online(INDEXED) == _feast_online(materialized, INDEXED)


def test_another_index_or_a_damaged_cache_takes_the_snapshot_again(materialized: Settings) -> None:
    from assetmatch.features.provider import FeastFeatureProvider

    online_features(materialized, _index("idx-1"))
    assert isinstance(online_features(materialized, _index("idx-1")), SnapshotFeatures)
    assert isinstance(online_features(materialized, _index("idx-2")), FeastFeatureProvider)
    assert isinstance(online_features(materialized, _index("idx-2")), SnapshotFeatures)

    path = cache_folder(materialized) / FEATURES_FILE
    path.write_text('{"key": ', encoding="utf-8")  # a write cut short
    assert isinstance(online_features(materialized, _index("idx-2")), FeastFeatureProvider)
    rebuilt = online_features(materialized, _index("idx-2"))
    assert isinstance(rebuilt, SnapshotFeatures)
    assert rebuilt.online(INDEXED) == _feast_online(materialized, INDEXED)


def test_a_call_with_the_snapshot_imports_no_feast(materialized: Settings, tmp_path: Path) -> None:
    online_features(materialized, _index())  # takes the snapshot
    got = _in_subprocess(
        tmp_path / "assetmatch.yaml",
        "from assetmatch.cli.match_cache import online_features\n"
        f"index = SimpleNamespace(id='idx-1', asset_ids={INDEXED!r})\n"
        f"answer = online_features(settings, index).online({INDEXED!r})",
    )
    assert got["imported"] == []
    assert got["answer"] == _feast_online(materialized, INDEXED)


# ---- the champion adapter --------------------------------------------------------------------------
def _adapter_version(settings: Settings, business: str, threshold: float, alias: str = "champion") -> str:
    """Register an adapter folder (its calibration says `threshold`) as a new version with `alias`."""
    from assetmatch.matching.fine import FineCalibration, write_calibration
    from assetmatch.registry.mlflow import ADAPTER_ARTIFACT, Registry

    folder = Path(settings.training.adapters_dir) / f"built-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    write_calibration(folder, FineCalibration(threshold=threshold))
    registry = Registry.from_settings(settings)
    run = registry.client.create_run(registry.experiment_id(business))
    registry.client.log_artifacts(run.info.run_id, str(folder), ADAPTER_ARTIFACT)
    registry.client.set_terminated(run.info.run_id, "FINISHED")
    return registry.register(business, run.info.run_id, alias=alias)


def _champion(settings: Settings, business: str) -> tuple[str, float | None]:
    ranker, why = champion_ranker(settings, business)
    if ranker is None:
        return why, None
    assert isinstance(ranker, LazyChampion) and not ranker.loaded()  # no model loaded to answer this
    return ranker.version(business), ranker.calibration(business).threshold


def test_no_registry_yet_is_said_and_not_created(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path))
    assert champion_ranker(settings, "moba") == (None, "none (no MLflow registry yet)")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_champion_is_resolved_once_per_registry_change(tmp_path: Path) -> None:
    config = _config(tmp_path)
    settings = load_settings(config)
    v1 = _adapter_version(settings, "moba", 0.25)
    assert _champion(settings, "farm") == ("none (farm has no champion adapter)", None)
    assert _champion(settings, "moba") == (f"assetmatch-ranker-moba/{v1}", 0.25)
    cached = json.loads((cache_folder(settings) / CHAMPIONS_FILE).read_text(encoding="utf-8"))
    assert set(cached["businesses"]) == {"farm", "moba"}  # both answers kept under one stamp

    # while the registry file is unchanged, a new process answers without MLflow
    code = (
        "from assetmatch.cli.match_cache import champion_ranker\n"
        "answer = {}\n"
        "for b in sys.argv[1:] or ('moba', 'farm'):\n"
        "    r, why = champion_ranker(settings, b)\n"
        "    answer[b] = [r.version(b), r.calibration(b).threshold] if r else [why, None]"
    )
    got = _in_subprocess(config, code)
    assert got["imported"] == []
    assert got["answer"] == {
        "moba": [f"assetmatch-ranker-moba/{v1}", 0.25],
        "farm": ["none (farm has no champion adapter)", None],
    }

    # a new champion changes the registry file: the next call sees it, and the cache then holds
    # only what was resolved since (farm is asked of MLflow again)
    v2 = _adapter_version(settings, "moba", 0.75)
    assert v2 != v1
    assert _champion(settings, "moba") == (f"assetmatch-ranker-moba/{v2}", 0.75)
    got = _in_subprocess(config, code, "moba")
    assert got["imported"] == []
    assert got["answer"] == {"moba": [f"assetmatch-ranker-moba/{v2}", 0.75]}
    got = _in_subprocess(config, code, "farm")
    assert got["imported"] == ["mlflow"]
    assert got["answer"] == {"farm": ["none (farm has no champion adapter)", None]}

    # farm gets a champion too (another registry change): its cached "none" is not believed
    v3 = _adapter_version(settings, "farm", 0.5)
    assert _champion(settings, "farm") == (f"assetmatch-ranker-farm/{v3}", 0.5)


def test_a_removed_adapter_folder_is_downloaded_again(tmp_path: Path) -> None:
    import shutil

    settings = load_settings(_config(tmp_path))
    version = _adapter_version(settings, "moba", 0.4)
    ranker, _ = champion_ranker(settings, "moba")
    assert isinstance(ranker, LazyChampion)
    shutil.rmtree(ranker.folder)
    again, _ = champion_ranker(settings, "moba")
    assert isinstance(again, LazyChampion)
    assert again.folder.is_dir() and (again.folder / "adapter_config.json").exists()
    assert _champion(settings, "moba") == (f"assetmatch-ranker-moba/{version}", 0.4)


def test_a_damaged_champion_cache_is_read_from_mlflow_again(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path))
    version = _adapter_version(settings, "moba", 0.6)
    assert _champion(settings, "moba") == (f"assetmatch-ranker-moba/{version}", 0.6)
    path = cache_folder(settings) / CHAMPIONS_FILE
    path.write_text("[1, 2", encoding="utf-8")
    assert _champion(settings, "moba") == (f"assetmatch-ranker-moba/{version}", 0.6)
    assert json.loads(path.read_text(encoding="utf-8"))["businesses"]["moba"]["version"] == version
