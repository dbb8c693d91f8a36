"""Serving with real adapters from a real MLflow registry: multi-LoRA batches, hot reload, failed
reload, rollback, A/B arms, feedback into the lake, Redis cache."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from assetmatch.config import Settings
from assetmatch.serving.auth import hash_key

pytestmark = pytest.mark.integration

KEY = {"X-API-Key": "key-all"}


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: far faster than two spinning ones on a busy shared CPU (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """ga and gb with 30 synthetic tables each; an untrained champion adapter each, in MLflow."""
    from assetmatch.serving.synthetic import synthetic_deployment

    root = tmp_path_factory.mktemp("serving-models")
    with one_torch_thread():
        settings = synthetic_deployment(root, ("ga", "gb"), tables=30, paths=("lexical",))
        serving = settings.serving.model_copy(
            update={
                "api_keys": {hash_key("key-all"): ["*"]},
                "reload_interval_s": 0,
                "max_wait_ms": 20,
                "ab_split": {"gb": 0.5},
                "fine_wait_budget_ms": 0,  # always queue: these tests compare fine scores
            }
        )
        # float32: a mixed batch then scores each row exactly as a lone pass (int8 quantizes the
        # activations per batch, so its scores move slightly with their batch-mates)
        ranker = settings.ranker.model_copy(update={"max_length": 64, "device": "cpu", "quantize": "none"})
        yield settings.model_copy(update={"serving": serving, "ranker": ranker})


def registry(settings: Settings) -> Any:
    from assetmatch.registry.mlflow import Registry

    return Registry.from_settings(settings)


def new_version(settings: Settings, business: str, seed: int, alias: str, broken: bool = False) -> str:
    from assetmatch.serving.synthetic import register_adapter, untrained_adapter

    folder = Path(settings.training.adapters_dir) / business / f"seed{seed}"
    untrained_adapter(folder, seed=seed)
    if broken:  # a corrupt upload: the weights file is garbage
        (folder / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    return register_adapter(registry(settings), business, folder, alias=alias)


@pytest.fixture
def client(deployment: Settings, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    with one_torch_thread():
        app = create_app(deployment, spool_dir=str(tmp_path / "spool"))
        with TestClient(app, raise_server_exceptions=False) as test_client:
            yield test_client


def ask(client: Any, business: str, text: str = "daily revenue of user per channel", **extra: Any) -> Any:
    response = client.post(
        "/v1/match", json={"business": business, "requirement": text, "k": 10, **extra}, headers=KEY
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_concurrent_mixed_business_requests_score_like_each_row_alone(client: Any) -> None:
    """Requests of ga and gb batched together by the app give the fine scores of a lone forward pass."""
    ctx = client.app.state.ctx
    texts = ["daily revenue of user per channel", "top guild by payment amount", "login retention of device"]
    jobs = [(b, t) for t in texts for b in ("ga", "gb")]
    before = ctx.batcher.batches  # the load's probe queries ran batches of their own
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: ask(client, job[0], job[1], explain=True), jobs))
    assert ctx.batcher.batches - before < len(jobs)  # some requests shared a forward pass
    state = ctx.holder.current
    index = state.engines["champion"].index
    engine = state.engines["champion"]
    for (business, text), answer in zip(jobs, answers):
        fine = [t for t in answer["tables"] if t["fine_score"] is not None]
        assert fine and answer["model_version"] == "1" and answer["fine_depth"] >= len(fine)
        rows = engine.fine_ranker.rows(business, text, [index.assets[t["asset_id"]] for t in fine])
        assert {r[0] for r in rows} == {f"{business}@1"}
        # the same request alone: its rows in a forward pass of their own, fused and selected the same
        alone = engine.match(business, text, k=10)
        assert [(t["asset_id"], t["fine_score"]) for t in fine] == [
            (t.asset_id, pytest.approx(t.fine_score, abs=1e-4))
            for t in alone.ranked
            if t.fine_score is not None
        ]
        assert answer["selected"] == alone.selected


def test_hot_reload_swap_inflight_failed_load_and_rollback(client: Any, deployment: Settings) -> None:
    ctx = client.app.state.ctx
    reload = lambda: client.portal.call(ctx.reloader.reload)  # noqa: E731
    before = ask(client, "ga")
    assert before["model_version"] == "1"

    # 1. a request in flight on the old state keeps it (and its adapter) while v2 is swapped in
    with ctx.holder.use() as old_state:
        v2 = new_version(deployment, "ga", seed=202, alias="champion")
        assert reload() is True
        assert ask(client, "ga")["model_version"] == v2
        assert old_state.model("ga", "champion").version == "1"
        assert "ga@1" in ctx.scorer.adapters  # still needed by the request in flight
        late = old_state.engines["champion"].match("ga", "daily revenue of user per channel", 5)
        assert late.model_version == "1"
    deadline = time.time() + 30
    while "ga@1" in ctx.scorer.adapters and time.time() < deadline:
        time.sleep(0.1)
    assert "ga@1" not in ctx.scorer.adapters and f"ga@{v2}" in ctx.scorer.adapters

    # 2. a broken champion: the load fails, v2 keeps serving, readiness and metrics say so
    new_version(deployment, "ga", seed=303, alias="champion", broken=True)
    assert reload() is False
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["reload_error"]
    assert "assetmatch_reload_failing 1.0" in client.get("/metrics").text
    assert ask(client, "ga", "weekly coupon refunds")["model_version"] == v2

    # 3. rollback: point champion back at version 1; same path, the error clears
    registry(deployment).set_alias("ga", "champion", "1")
    assert reload() is True
    assert ask(client, "ga", "weekly coupon refunds by region")["model_version"] == "1"
    assert client.get("/readyz").json()["reload_error"] is None
    assert 'assetmatch_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text


def test_ab_arms_are_sticky_and_feedback_lands_in_the_lake(deployment: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from assetmatch.lake import tables as T
    from assetmatch.lake.delta import Lake
    from assetmatch.serving.ab import ab_report
    from assetmatch.serving.app import create_app

    challenger = new_version(deployment, "gb", seed=404, alias="challenger")
    lake = Lake(tmp_path / "lake")
    with one_torch_thread():
        app = create_app(deployment, lake=lake, spool_dir=str(tmp_path / "spool"))
        with TestClient(app, raise_server_exceptions=False) as client:
            arms: dict[str, str] = {}
            for i in range(8):
                user = f"user-{i}"
                answer = ask(client, "gb", f"top channel by payment amount {i}", user_id=user)
                again = ask(client, "gb", f"login days of device {i}", user_id=user)
                assert again["arm"] == answer["arm"]  # sticky
                expected = challenger if answer["arm"] == "challenger" else "1"
                assert answer["model_version"] == expected
                arms[user] = answer["arm"]
                used = answer["selected"][:1]
                sent = client.post(
                    "/v1/feedback",
                    json={"request_id": answer["request_id"], "used_assets": used},
                    headers=KEY,
                )
                assert sent.status_code == 200
            assert set(arms.values()) == {"champion", "challenger"}
            assert ask(client, "ga")["arm"] == "champion"  # ga has no challenger
            assert ask(client, "gb")["arm"] == "champion"  # no user id: champion
        # the app has shut down: every accepted feedback row is in the lake, nothing in the spool
    rows = lake.read_arrow(T.FEEDBACK).to_pylist()
    assert len(rows) == 8
    assert {r["arm"] for r in rows} == {"champion", "challenger"}
    assert all(r["business"] == "gb" and r["returned_assets"] for r in rows)
    assert not list((tmp_path / "spool").glob("*.jsonl"))
    (report,) = ab_report(rows, rounds=200)
    assert {a.arm for a in report.arms} == {"champion", "challenger"}
    registry(deployment).delete_alias("gb", "challenger")


def test_unwritable_lake_spools_feedback_and_the_next_start_lands_it(
    deployment: Settings, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from assetmatch.lake import tables as T
    from assetmatch.lake.delta import Lake
    from assetmatch.serving.app import create_app

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the lake folder should be")
    spool = tmp_path / "spool"
    settings = deployment.model_copy(
        update={"serving": deployment.serving.model_copy(update={"ab_split": {}})}
    )
    with one_torch_thread():
        with TestClient(create_app(settings, lake=Lake(blocked), spool_dir=str(spool))) as client:
            answer = ask(client, "ga")
            body = {"request_id": answer["request_id"], "used_assets": answer["selected"]}
            assert client.post("/v1/feedback", json=body, headers=KEY).status_code == 200
        spooled = list(spool.glob("*.jsonl"))
        assert len(spooled) == 1 and json.loads(spooled[0].read_text())["request_id"] == answer["request_id"]
        good = Lake(tmp_path / "lake")
        with TestClient(create_app(settings, lake=good, spool_dir=str(spool))):
            pass
    assert [r["request_id"] for r in good.read_arrow(T.FEEDBACK).to_pylist()] == [answer["request_id"]]
    assert not list(spool.glob("*.jsonl"))


def test_redis_cache_shared_between_two_app_instances(
    deployment: Settings, redis_url: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from assetmatch.serving.app import create_app

    serving = deployment.serving.model_copy(
        update={"redis_cache_url": SecretStr(f"redis://{redis_url}/0"), "ab_split": {}}
    )
    settings = deployment.model_copy(update={"serving": serving})
    text = f"redis cached requirement {time.time_ns()}"
    with one_torch_thread():
        with TestClient(create_app(settings, spool_dir=str(tmp_path / "s1"))) as first:
            assert ask(first, "ga", text)["cached"] is False
        with TestClient(create_app(settings, spool_dir=str(tmp_path / "s2"))) as second:
            assert ask(second, "ga", text)["cached"] is True
