"""HTTP details of the match API: 405 with Allow, HEAD /healthz, /metrics for every status, and a 500
that is logged once and leaves the keep-alive connection usable (on a real uvicorn server)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from assetmatch.config import Settings

GA = {"X-API-Key": "key-ga"}


def test_405_names_the_allowed_methods(client: Any) -> None:
    for method, path, allowed in (("GET", "/v1/match", "POST"), ("DELETE", "/v1/feedback", "POST")):
        response = client.request(method, path, headers=GA)
        assert response.status_code == 405
        assert response.headers["allow"] == allowed
        assert response.json()["error"] == "method_not_allowed"


def test_head_healthz_is_200(client: Any) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""


def test_metrics_record_every_status(client: Any) -> None:
    body = {"business": "ga", "requirement": "daily revenue of user", "k": 5}
    assert client.post("/v1/match", json=body, headers=GA).status_code == 200
    assert client.post("/v1/match", json=body).status_code == 401
    assert client.post("/v1/match", json={**body, "business": "gb"}, headers=GA).status_code == 403
    assert client.post("/v1/match", json={**body, "k": 0}, headers=GA).status_code == 422
    assert client.get("/v1/match", headers=GA).status_code == 405
    assert client.get("/no/such/path").status_code == 404
    metrics = client.get("/metrics").text
    for route, status in (("match", 200), ("match", 401), ("match", 403), ("match", 422), ("match", 405),
                          ("unmatched", 404)):  # fmt: skip
        assert f'route="{route}"' in metrics and f'status="{status}"' in metrics
        line = next(
            (
                ln
                for ln in metrics.splitlines()
                if ln.startswith("assetmatch_request_seconds_count")
                and f'route="{route}"' in ln
                and f'status="{status}"' in ln
            ),
            None,
        )
        assert line is not None and float(line.rsplit(" ", 1)[1]) >= 1, (route, status)


class BrokenCache:
    """A response cache with a bug: every lookup raises (an unexpected error inside /v1/match)."""

    def get(self, key: str) -> dict[str, Any] | None:
        raise RuntimeError("cache exploded")

    def put(self, key: str, value: dict[str, Any]) -> None:
        raise RuntimeError("cache exploded")


@pytest.fixture
def live_server(deployment: Settings, tmp_path: Path) -> Iterator[tuple[Any, int]]:
    """The app on a real uvicorn server in a thread (no log config: records reach caplog)."""
    import uvicorn

    from assetmatch.serving.app import create_app

    app = create_app(deployment, model_source=None, spool_dir=str(tmp_path / "spool"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        server.should_exit = True
        raise TimeoutError("server not ready")
    try:
        yield app, port
    finally:
        server.should_exit = True
        thread.join(60)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        body += chunk
    return status, headers, body


def test_a_500_is_logged_once_and_keeps_the_connection(
    live_server: tuple[Any, int], caplog: pytest.LogCaptureFixture
) -> None:
    app, port = live_server
    app.state.ctx.cache = BrokenCache()
    payload = b'{"business": "ga", "requirement": "daily revenue of user", "k": 5}'
    match = (
        b"POST /v1/match HTTP/1.1\r\nHost: t\r\nX-API-Key: key-ga\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )
    with caplog.at_level(logging.ERROR), socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(match)
        status, headers, body = _read_response(sock)
        assert status == 500 and b"internal error" in body and b"cache exploded" not in body
        assert headers.get("connection", "").lower() != "close"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # same connection
        status, _, body = _read_response(sock)
        assert status == 200 and body == b'{"status":"ok"}'
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info is not None]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    exc_info = errors[0].exc_info
    assert exc_info is not None and "cache exploded" in str(exc_info[1])
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'route="match",status="500"' in metrics.replace('business="ga",model_version="",', "")
    assert 'assetmatch_errors_total{kind="internal"} 1.0' in metrics
