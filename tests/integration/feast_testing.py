"""What the Feast integration tests share: the hand-built lake module, settings for a test's own Feast
project (runs never collide in the shared Redis), and the defaults counter."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client import REGISTRY

from assetmatch.config import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def lakedata() -> ModuleType:
    """tests/unit/features/feature_lakedata.py (loaded by path: test folders are not packages)."""
    spec = importlib.util.spec_from_file_location(
        "feature_lakedata", REPO_ROOT / "tests" / "unit" / "features" / "feature_lakedata.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def new_project() -> str:
    return f"am_test_{uuid.uuid4().hex[:10]}"


def feast_settings(root: Path, project: str | None = None, **feast: Any) -> Settings:
    """Settings with the lake in root/lake and Feast's data in root/feast, for one Feast project."""
    return load_settings(
        None,
        lake={"uri": str(root / "lake")},
        feast={
            "data_dir": str(root / "feast"),
            "repo_path": str(REPO_ROOT / "feature_repo"),
            "project": project or new_project(),
            **feast,
        },
    )


def defaults_counter(reason: str) -> float:
    return REGISTRY.get_sample_value("assetmatch_feature_defaults_total", {"reason": reason}) or 0.0
