"""Request threads run the coarse math with capped thread pools (`serving.threads`): OpenMP's team
size is per calling thread, so a cap set once at start-up would not reach the server's workers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime the coarse model's predict uses)
from threadpoolctl import threadpool_info, threadpool_limits

from assetmatch.config import ServingConfig
from assetmatch.serving import threads
from assetmatch.serving.threads import THREAD_VARIABLES, limit_math_threads, match_concurrency, run_limited


def openmp_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}


def in_new_thread(fn: Any) -> Any:
    """`fn()` in a fresh thread, as a request runs in the server's pool; returns its result."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def test_a_request_thread_runs_with_the_openmp_cap_and_gets_its_own_setting_back() -> None:
    threads._openmp.cache_clear()  # every OpenMP runtime this test process has loaded by now

    def request() -> tuple[set[int], set[int], set[int]]:
        with threadpool_limits(limits=4, user_api="openmp"):  # what this thread had before: 4
            before = openmp_threads()
            during = run_limited(1, openmp_threads)
            after = openmp_threads()
        return before, during, after

    before, during, after = in_new_thread(request)
    assert before == {4} and during == {1} and after == {4}
    assert in_new_thread(lambda: run_limited(0, openmp_threads)) == in_new_thread(
        openmp_threads
    )  # 0: untouched


def test_start_up_caps_the_process_wide_blas_pools(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in THREAD_VARIABLES:  # restored after the test, whatever start-up sets
        monkeypatch.delenv(name, raising=False)
    controller = threadpool_limits(limits=2, user_api="blas")  # restored below: other tests keep theirs
    try:
        limit_math_threads(1)
        assert all(os.environ[name] == "1" for name in THREAD_VARIABLES)  # for libraries loaded later
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    finally:
        controller.restore_original_limits()


def lexical_app(tmp_path: Path, **serving: Any) -> Any:
    """The API over a tiny synthetic deployment (one business, lexical recall, no adapters, no cache),
    with these `serving` settings; key "k" may query everything."""
    from assetmatch.serving.app import create_app
    from assetmatch.serving.auth import hash_key
    from assetmatch.serving.synthetic import synthetic_deployment

    settings = synthetic_deployment(
        tmp_path / "deploy", ("ga",), tables=12, adapters=False, paths=("lexical",)
    )
    updates = {"api_keys": {hash_key("k"): ["*"]}, "reload_interval_s": 0, "cache_size": 0, **serving}
    return create_app(
        settings.model_copy(update={"serving": settings.serving.model_copy(update=updates)}),
        model_source=None,
        spool_dir=str(tmp_path / "spool"),
    )


def match_noting(app: Any, client: Any, note: Any) -> tuple[Any, list[Any]]:
    """One /v1/match through `client`, with a spy around the real engine that records `note()` while
    the engine matches (in the server's request thread); the response and what was noted."""
    seen: list[Any] = []
    engine = app.state.ctx.holder.current.engines["champion"]
    match = engine.match

    def spy(*args: Any) -> Any:
        seen.append(note())
        return match(*args)

    engine.match = spy
    response = client.post(
        "/v1/match",
        json={"business": "ga", "requirement": "daily revenue of user per channel", "k": 5},
        headers={"X-API-Key": "k"},
    )
    return response, seen


def test_serving_caps_math_threads_at_one_by_default() -> None:
    assert ServingConfig().math_threads == 1


@pytest.mark.parametrize("cap", [1, 3])
def test_a_match_request_through_the_api_runs_at_the_configured_cap(cap: int, tmp_path: Path) -> None:
    """The whole path: /v1/match in the server's pool thread sees `serving.math_threads` OpenMP
    threads while the engine matches (a spy around the real engine records it)."""
    from fastapi.testclient import TestClient

    app = lexical_app(tmp_path, math_threads=cap)
    with TestClient(app, raise_server_exceptions=False) as client:
        response, seen = match_noting(app, client, openmp_threads)
    assert response.status_code == 200, response.text
    assert response.json()["tables"]
    assert seen == [{cap}]


def test_match_concurrency_defaults_to_two_per_core() -> None:
    assert ServingConfig().max_concurrent_matches == 0
    assert match_concurrency(0, cores=2) == 4 and match_concurrency(0, cores=16) == 32
    assert match_concurrency(3, cores=16) == 3  # a configured value wins


@pytest.mark.parametrize("limit", [2, 8])
def test_no_more_matches_compute_at_once_than_the_limit(limit: int, tmp_path: Path) -> None:
    """Eight concurrent /v1/match calls: at most `serving.max_concurrent_matches` of them are inside
    the engine at once (a spy around the real engine holds each one for a while and counts); the
    others wait for a slot and are answered too."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    app = lexical_app(tmp_path, max_concurrent_matches=limit)
    inside, most = 0, 0
    lock = threading.Lock()
    with TestClient(app, raise_server_exceptions=False) as client:
        engine = app.state.ctx.holder.current.engines["champion"]
        match = engine.match

        def spy(*args: Any) -> Any:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.2)
                return match(*args)
            finally:
                with lock:
                    inside -= 1

        engine.match = spy

        def ask(i: int) -> int:
            body = {"business": "ga", "requirement": f"daily revenue per channel {i}", "k": 5}
            return client.post("/v1/match", json=body, headers={"X-API-Key": "k"}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(ask, range(8)))
    assert statuses == [200] * 8
    assert most == limit if limit < 8 else most > 2  # the cap holds; without it more run at once


def test_the_model_batches_thread_rule_counts_the_requests_computing(tmp_path: Path) -> None:
    """`serving.torch_threads_alone` reaches the batcher, whose rule counts the route's compute slots
    taken: the request being matched holds one while its engine runs (a spy reads the count there)."""
    from fastapi.testclient import TestClient

    app = lexical_app(tmp_path, torch_threads=1, torch_threads_alone=2)
    with TestClient(app, raise_server_exceptions=False) as client:
        rule = app.state.ctx.batcher.threads
        assert (rule.shared, rule.alone) == (1, 2)
        assert rule.computing() == 0
        response, seen = match_noting(app, client, rule.computing)
    assert response.status_code == 200, response.text
    assert seen == [1]
    off = lexical_app(tmp_path / "off", torch_threads=0)
    with TestClient(off):
        assert off.state.ctx.batcher.threads is None  # torch's default threads: left alone
