"""Serving fixtures: a tiny real deployment (lake + lexical index), a real MiniLM scorer with
three untrained, seeded LoRA adapters, and API keys for two tenants."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import Settings
from assetmatch.serving.auth import hash_key

KEYS = {"key-ga": ["ga"], "key-gb": ["gb"], "key-all": ["*"]}


def headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture(scope="session")
def adapter_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three untrained adapters with different seeds (random A and B, so they score differently)."""
    from assetmatch.serving.synthetic import untrained_adapter

    root = tmp_path_factory.mktemp("adapters")
    with one_torch_thread():
        return {
            name: untrained_adapter(root / name, seed=seed) for seed, name in enumerate(["a", "b", "c"], 1)
        }


@pytest.fixture(scope="session")
def scorer(adapter_folders: dict[str, Path]) -> Any:
    """One MiniLM base with adapters a, b, c loaded beside it."""
    from assetmatch.ranking.model import MultiAdapterScorer

    with one_torch_thread():
        # mixed: the batcher's "mixed" mode calls score_rows, which must really mix adapters
        model = MultiAdapterScorer(device="cpu", max_length=64, batch_size=64, mixed=True)
        for name, folder in adapter_folders.items():
            model.load_adapter(name, folder)
    return model


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Businesses ga and gb (40 synthetic tables each, shared vocabulary) and a shared library."""
    from assetmatch.serving.synthetic import synthetic_deployment

    root = tmp_path_factory.mktemp("deploy")
    with one_torch_thread():
        settings = synthetic_deployment(
            root, ("ga", "gb"), tables=40, shared="common", adapters=False, paths=("lexical",)
        )
    return settings.model_copy(
        update={
            "serving": settings.serving.model_copy(
                update={
                    "api_keys": {hash_key(k): v for k, v in KEYS.items()},
                    "max_requirement_chars": 200,
                    "max_k": 20,
                    "max_body_bytes": 4096,
                    "reload_interval_s": 0,
                }
            )
        }
    )


@pytest.fixture(scope="module")
def client(deployment: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running coarse-only app (no adapters) over the tiny deployment."""
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    app = create_app(deployment, model_source=None, spool_dir=str(tmp_path_factory.mktemp("spool")))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread inside the block: on a busy shared CPU two spinning OpenMP threads are
    ~10x slower than one. Restored afterwards (torch's setting is process-wide)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield
