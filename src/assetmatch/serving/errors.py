"""Error answers: one JSON shape, the right status, never a stack trace or a secret.

Validation errors keep pydantic's location and message but drop the echoed input (a requirement
can be long or sensitive). Unexpected exceptions are logged server-side once, with the request id,
and answered with a generic 500 that quotes only that id.

Why a middleware for the 500 and not `exception_handler(Exception)`: Starlette runs a handler for
`Exception` in its outermost `ServerErrorMiddleware`, which sends the answer and then re-raises, so
uvicorn logs the error a second time and closes the keep-alive connection (the client's next
request on it fails). `InternalErrorMiddleware` answers and swallows it: one log line, connection kept.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assetmatch.serving.auth import AuthError
from assetmatch.serving.batching import BatcherClosed
from assetmatch.serving.state import StateUnavailable

log = logging.getLogger(__name__)

KINDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 422: "invalid", 500: "internal", 503: "unavailable"}  # fmt: skip


def error_response(status: int, detail: Any, request: Request | None = None, **headers: str) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    body = {"error": KINDS.get(status, "error"), "detail": detail, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers or None)


def invalid(field: str, message: str) -> HTTPException:
    """A 422 for a configurable limit, shaped like pydantic's own errors."""
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": message, "type": "limit"}])


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"request body larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413: by Content-Length up front, or while streaming.

    The streaming case raises an HTTPException subclass from `receive`, which FastAPI re-raises
    as is while reading the body, so it reaches the 413 handler instead of a generic 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    response = error_response(413, f"request body larger than {self.max_bytes} bytes")
                    await response(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else {}
        return error_response(exc.status, exc.detail, request, **headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return error_response(422, detail, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # exc.headers carries e.g. `Allow` on a 405 (RFC 9110 requires it)
        return error_response(exc.status_code, exc.detail, request, **(exc.headers or {}))

    @app.exception_handler(StateUnavailable)
    @app.exception_handler(BatcherClosed)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        return error_response(503, str(exc), request, **{"Retry-After": "5"})


class InternalErrorMiddleware:
    """Turns an unexpected exception into one logged line and a generic 500 on a connection that stays
    open. Installed inside Starlette's ServerErrorMiddleware (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            request_id = (scope.get("state") or {}).get("request_id")
            log.error("unhandled error on %s (request %s)", scope.get("path"), request_id, exc_info=exc)
            ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
            if ctx is not None:
                ctx.metrics.errors.labels("internal").inc()
            if started:  # half a response is out: nothing sane to add; the server closes the connection
                raise
            body = {"error": "internal", "detail": "internal error; quote the request id when reporting it",
                    "request_id": request_id}  # fmt: skip
            await JSONResponse(body, status_code=500)(scope, receive, send)
