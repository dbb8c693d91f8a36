"""A new index goes live only after a consistency check; a reverted failure clears the error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assetmatch.config import Settings
from assetmatch.serving.auth import hash_key

KEY = {"X-API-Key": "k"}


@pytest.fixture
def own_deployment(tmp_path: Path) -> Settings:
    """ga and gb (24 tables each) and a shared library, lexical recall: this test's own index root."""
    from assetmatch.serving.synthetic import synthetic_deployment

    settings = synthetic_deployment(
        tmp_path / "deploy", ("ga", "gb"), tables=24, shared="common", adapters=False, paths=("lexical",)
    )
    serving = settings.serving.model_copy(
        update={"api_keys": {hash_key("k"): ["*"]}, "reload_interval_s": 0, "cache_size": 0}
    )
    return settings.model_copy(update={"serving": serving})


@pytest.fixture
def client(own_deployment: Settings, tmp_path: Path) -> Iterator[Any]:
    from assetmatch.serving.app import create_app

    app = create_app(own_deployment, model_source=None, spool_dir=str(tmp_path / "spool"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def answers(client: Any) -> dict[str, int]:
    """Tables answered per business for a requirement in the synthetic vocabulary (all must be 200)."""
    out = {}
    for business in ("ga", "gb"):
        response = client.post(
            "/v1/match",
            json={"business": business, "requirement": "daily revenue of user per channel", "k": 10},
            headers=KEY,
        )
        assert response.status_code == 200, response.text
        out[business] = len(response.json()["tables"])
    return out


def failing(client: Any) -> str:
    lines = client.get("/metrics").text.splitlines()
    return next(line for line in lines if line.startswith("assetmatch_reload_failing"))


def test_an_inconsistent_index_never_goes_live_and_reverting_it_clears_the_error(
    client: Any, own_deployment: Settings
) -> None:
    from assetmatch.serving.faults import publish_inconsistent_index

    ctx = client.app.state.ctx
    reload = lambda: client.portal.call(ctx.reloader.reload)  # noqa: E731
    good = ctx.holder.current.index_version
    before = answers(client)
    assert all(before.values())

    fault = publish_inconsistent_index(own_deployment.recall.index_root)
    assert reload() is False  # loaded, checked, refused
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["index_version"] == good
    assert "consistency check" in ready["reload_error"] and "assets" in ready["reload_error"]
    assert failing(client) == "assetmatch_reload_failing 1.0"
    assert answers(client) == before  # the old index answers both businesses, unchanged

    fault.undo()  # the operator points CURRENT back at the good index: what serves is published again
    assert reload() is False  # nothing to swap...
    assert client.get("/readyz").json()["reload_error"] is None  # ...and the failure is over
    assert failing(client) == "assetmatch_reload_failing 0.0"


def test_a_good_index_after_a_bad_one_goes_live(client: Any, own_deployment: Settings) -> None:
    from assetmatch.lake.delta import Lake
    from assetmatch.recall.index import IndexSet
    from assetmatch.serving.faults import publish_inconsistent_index

    ctx = client.app.state.ctx
    publish_inconsistent_index(own_deployment.recall.index_root)
    assert client.portal.call(ctx.reloader.reload) is False
    rebuilt = IndexSet.build(Lake.from_settings(own_deployment), own_deployment)
    assert client.portal.call(ctx.reloader.reload) is True
    ready = client.get("/readyz").json()
    assert ready["index_version"] == rebuilt.id and ready["reload_error"] is None
    assert failing(client) == "assetmatch_reload_failing 0.0"
    assert all(answers(client).values())


def test_check_index_names_every_disagreement(own_deployment: Settings) -> None:
    from assetmatch.recall import publish
    from assetmatch.recall.index import IndexSet
    from assetmatch.serving.faults import publish_inconsistent_index
    from assetmatch.serving.reload import check_index

    root = Path(own_deployment.recall.index_root)
    assert check_index(IndexSet.load_latest(root)) == []
    publish_inconsistent_index(root)
    broken = IndexSet.load(root / str(publish.current_id(root)))
    problems = check_index(broken)
    assert any("manifest counts 58 assets, 29 loaded" in p for p in problems), problems
    assert any("BM25 index holds 58 documents for 29 assets" in p for p in problems), problems
    assert any("join graph has 58 nodes" in p for p in problems), problems
    # 2 x 24 tables + 10 shared, sorted by business (common, ga, gb): gb's rows are the ones cut
    assert any("businesses in the manifest but without tables" in p and "gb" in p for p in problems)
