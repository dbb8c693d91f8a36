"""The per-app serving context and the FastAPI dependencies that hand out its parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Header, Request

from assetmatch.config import Settings
from assetmatch.lake.delta import Lake
from assetmatch.serving.auth import KeyStore, Principal, key_from_headers
from assetmatch.serving.batching import MicroBatcher
from assetmatch.serving.cache import ResponseCache
from assetmatch.serving.feedback import FeedbackWriter, RequestMemory
from assetmatch.serving.metrics import ServingMetrics
from assetmatch.serving.reload import Reloader, StateLoader
from assetmatch.serving.state import StateHolder


@dataclass
class ServingContext:
    """Everything one app instance owns; built by `create_app`, started and stopped by its lifespan."""

    settings: Settings
    keys: KeyStore
    metrics: ServingMetrics
    holder: StateHolder
    batcher: MicroBatcher
    loader: StateLoader
    reloader: Reloader
    cache: ResponseCache
    memory: RequestMemory
    feedback: FeedbackWriter
    lake: Lake
    scorer: Any = None
    match_limiter: Any = None  # anyio.CapacityLimiter of serving.max_concurrent_matches (set at start)
    started: bool = False
    stopping: bool = False

    def shared_businesses(self) -> set[str]:
        return {b.name for b in self.settings.businesses if b.shared}


def get_ctx(request: Request) -> ServingContext:
    ctx: ServingContext = request.app.state.ctx
    return ctx


def get_principal(
    ctx: ServingContext = Depends(get_ctx),
    x_api_key: str | None = Header(default=None, description="API key (or Authorization: Bearer <key>)."),
    authorization: str | None = Header(default=None, include_in_schema=False),
) -> Principal:
    """The caller, authenticated (401 on a missing or unknown key); business checks happen per route."""
    return ctx.keys.authenticate(key_from_headers(x_api_key, authorization))
