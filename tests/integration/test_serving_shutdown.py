"""`assetmatch serve` in a real process: SIGTERM lets in-flight requests finish, then exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from assetmatch.serving.auth import hash_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    from assetmatch.serving.loadgen import ServerProcess, free_port, write_config
    from assetmatch.serving.synthetic import synthetic_deployment

    settings = synthetic_deployment(tmp_path / "deploy", ("ga", "gb"), tables=30, paths=("lexical",))
    settings.ranker.max_length = 64
    config = write_config(
        settings,
        tmp_path / "assetmatch.yaml",
        {"api_keys": {hash_key("k"): ["*"]}, "cache_size": 0, "reload_interval_s": 0, "torch_threads": 1},
    )
    server = ServerProcess(config, free_port(), tmp_path / "server.log")
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as http:

            async def one(i: int) -> int:
                body = {"business": ("ga", "gb")[i % 2], "requirement": f"daily revenue of user {i}", "k": 10}
                response = await http.post(f"{server.url}/v1/match", json=body, headers={"X-API-Key": "k"})
                return response.status_code

            tasks = [asyncio.create_task(one(i)) for i in range(8)]
            await asyncio.sleep(0.3)  # requests are in flight (fine ranking takes longer than this)
            stopping = asyncio.to_thread(server.stop)
            codes = await asyncio.gather(*tasks)
            # uvicorn re-raises the captured SIGTERM after its graceful shutdown: -15 is a clean exit
            assert await stopping in (0, -signal.SIGTERM)
            return list(codes)

    started = time.monotonic()
    codes = asyncio.run(burst())
    assert codes == [200] * 8, codes
    assert time.monotonic() - started < 120
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log
