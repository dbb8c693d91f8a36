"""HTTP routes: /v1/match, /v1/feedback, /v1/businesses, /healthz, /readyz, /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from assetmatch.matching.matcher import UnknownDatabaseError
from assetmatch.matching.types import MatchResult
from assetmatch.models import scope_of
from assetmatch.serving.ab import assign_arm
from assetmatch.serving.auth import AuthError, Principal
from assetmatch.serving.batching import degraded_reason, parse_deadline_header, request_budget, run_within
from assetmatch.serving.cache import cache_key
from assetmatch.serving.deps import ServingContext, get_ctx, get_principal
from assetmatch.serving.errors import invalid
from assetmatch.serving.feedback import Answer, UsedAssetsRefused, check_used_assets, feedback_row
from assetmatch.serving.schemas import (
    BusinessOut,
    ErrorOut,
    FeedbackRequest,
    FeedbackResponse,
    MatchRequest,
    MatchResponse,
    TableOut,
)
from assetmatch.serving.threads import run_limited

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or unknown API key."},
    403: {"model": ErrorOut, "description": "The key may not query this business."},
    422: {"model": ErrorOut, "description": "Invalid body or a limit exceeded."},
    503: {"model": ErrorOut, "description": "Not ready (nothing loaded yet, or shutting down)."},
}

router = APIRouter()


def _tables(result: MatchResult, visible: set[str], explain: bool) -> list[TableOut]:
    """Response tables; anything outside the visible businesses is dropped (defence in depth)."""
    out: list[TableOut] = []
    for table in result.ranked:
        if table.business not in visible:
            continue
        out.append(
            TableOut(
                asset_id=table.asset_id,
                name=table.name,
                rank=len(out) + 1,
                score=table.score,
                coarse_score=table.coarse_score,
                fine_score=table.fine_score,
                selected=table.selected,
                reasons=list(table.reasons) if explain else None,
                path_scores=dict(table.path_scores) if explain else None,
            )
        )
    return out


@router.post(
    "/v1/match",
    response_model=MatchResponse,
    responses=ERRORS,
    summary="Rank the tables that answer a requirement and select the set it needs.",
)
async def match(
    body: MatchRequest,
    request: Request,
    ctx: ServingContext = Depends(get_ctx),
    principal: Principal = Depends(get_principal),
) -> MatchResponse:
    arrived = time.monotonic()
    request_id = uuid.uuid4().hex
    request.state.request_id = request_id
    request.state.business = body.business  # labels of assetmatch_request_seconds (every status)
    if not principal.may_query(body.business):
        raise AuthError(403, f"this API key may not query business {body.business!r}")
    limits = ctx.settings.serving
    if len(body.requirement) > limits.max_requirement_chars:
        raise invalid("requirement", f"requirement is longer than {limits.max_requirement_chars} characters")
    if body.k > limits.max_k:
        raise invalid("k", f"k must be at most {limits.max_k}")
    try:  # graceful overload: the fine ranker is skipped rather than queued past these
        header_deadline = parse_deadline_header(request.headers.get("x-request-deadline-ms"))
    except ValueError as exc:
        detail = [{"loc": ["header", "X-Request-Deadline-Ms"], "msg": str(exc), "type": "value_error"}]
        raise HTTPException(422, detail=detail) from None
    deadlines = [d for d in (body.deadline_ms, header_deadline) if d is not None]
    budget = request_budget(limits.fine_wait_budget_ms, min(deadlines) if deadlines else None, arrived)
    ctx.metrics.inflight.inc()
    try:
        with ctx.holder.use() as state:
            known = state.business_names()
            if known and body.business not in known:
                raise HTTPException(404, f"unknown business {body.business!r}")
            arm = assign_arm(
                body.business,
                body.user_id,
                limits.ab_split.get(body.business, 0.0),
                state.has_challenger(body.business),
            )
            ref = state.model(body.business, arm)
            key = cache_key(
                body.business,
                body.requirement,
                body.k,
                body.explain,
                arm,
                ref.version if ref else "",
                state.index_version,
                body.databases,
            )
            cached = ctx.cache.get(key)
            ctx.metrics.cache_lookup(cached is not None)
            if cached is not None:
                response = MatchResponse.model_validate(
                    {**cached, "request_id": request_id, "cached": True, "requirement": body.requirement}
                )
            else:
                try:
                    result = await anyio.to_thread.run_sync(
                        partial(
                            run_limited,
                            limits.math_threads,
                            run_within,
                            budget,
                            state.engines[arm].match,
                            body.business,
                            body.requirement,
                            body.k,
                            body.databases,
                        ),
                        limiter=ctx.match_limiter,
                    )
                except UnknownDatabaseError as exc:
                    raise HTTPException(
                        422, detail=[{"loc": ["body", "databases"], "msg": str(exc), "type": "value_error"}]
                    ) from None
                visible = {body.business} | ctx.shared_businesses()
                tables = _tables(result, visible, body.explain)
                shown = {t.asset_id for t in tables}
                response = MatchResponse(
                    request_id=request_id,
                    business=body.business,
                    requirement=body.requirement,
                    tables=tables,
                    selected=[a for a in result.selected if a in shown],
                    model_version=result.model_version,
                    index_version=state.index_version,
                    arm=arm,
                    cached=False,
                    timings_ms={k: round(v, 3) for k, v in result.timings_ms.items()},
                    fine_depth=result.fine_depth,
                    fine_skipped=result.fine_skipped,
                    coarse_model=result.coarse_model,
                    degraded=result.degraded,
                )
                if result.degraded:  # never cached: the next ask may get the fine answer
                    ctx.metrics.degraded.labels(body.business, degraded_reason(result.fine_skipped)).inc()
                else:
                    ctx.cache.put(key, response.model_dump(mode="json", exclude={"request_id", "cached"}))
                ctx.metrics.fine_answer(body.business, result.fine_depth, result.fine_skipped)
                for stage, ms in result.timings_ms.items():
                    ctx.metrics.stage_seconds.labels(stage, body.business, response.model_version).observe(
                        ms / 1000
                    )
    finally:
        ctx.metrics.inflight.dec()
    ctx.memory.put(
        request_id,
        Answer(
            body.business,
            body.requirement,
            tuple(response.selected),
            arm,
            response.model_version,
            shown_assets=tuple(t.asset_id for t in response.tables),
            databases=scope_of(body.databases),
        ),
    )
    ctx.metrics.arm_requests.labels(body.business, arm).inc()
    request.state.model_version = response.model_version
    return response


def _visible_in_index(ctx: ServingContext, business: str) -> Callable[[str], bool] | None:
    """Whether an asset id is a table of `business` or of a shared library in the index now serving
    (None when no index is loaded: then only the answer's own tables are accepted)."""
    state = ctx.holder.current
    engine = state.engines.get("champion") if state is not None else None
    assets = getattr(getattr(engine, "index", None), "assets", None)
    if assets is None:
        return None
    owners = {business} | ctx.shared_businesses()

    def visible(asset_id: str) -> bool:
        asset = assets.get(asset_id)
        return asset is not None and asset.business in owners

    return visible


FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {
        "model": ErrorOut,
        "description": "The request was answered for a business this key does not cover, or a used "
        "asset id is neither in the answer nor a table of that business or a shared library.",
    },
    404: {"model": ErrorOut, "description": "Unknown or forgotten request id."},
    409: {
        "model": ErrorOut,
        "description": "Other feedback was already recorded for this request id (the first stands).",
    },
}


@router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    responses=FEEDBACK_ERRORS,
    summary="Report which tables were really used for an earlier answer.",
    description="Once per request id. The same feedback again answers 200 with `duplicate: true` and is "
    "stored once; different feedback for an answered request is a 409.",
)
async def feedback(
    body: FeedbackRequest,
    request: Request,
    ctx: ServingContext = Depends(get_ctx),
    principal: Principal = Depends(get_principal),
) -> FeedbackResponse:
    answer = ctx.memory.get(body.request_id)
    if answer is None:
        raise HTTPException(404, f"no recent answer with request_id {body.request_id}")
    request.state.business = answer.business
    if not principal.may_query(answer.business):
        ctx.metrics.feedback_rows.labels("refused").inc()
        raise AuthError(403, "this API key may not give feedback on an answer for another business")
    if ctx.stopping:
        raise HTTPException(503, "shutting down")
    try:
        used = check_used_assets(answer, body.used_assets, _visible_in_index(ctx, answer.business))
    except UsedAssetsRefused as exc:
        ctx.metrics.feedback_rows.labels("refused").inc()
        raise AuthError(403, str(exc)) from None
    claim = ctx.memory.claim_feedback(body.request_id, frozenset(used))
    if claim == "duplicate":
        ctx.metrics.feedback_rows.labels("duplicate").inc()
        return FeedbackResponse(request_id=body.request_id, accepted=True, duplicate=True)
    if claim == "conflict":
        ctx.metrics.feedback_rows.labels("conflict").inc()
        raise HTTPException(409, "other feedback was already recorded for this request id; the first stands")
    ctx.feedback.add(feedback_row(body.request_id, answer, used))
    return FeedbackResponse(request_id=body.request_id, accepted=True)


@router.get(
    "/v1/businesses",
    response_model=list[BusinessOut],
    responses=ERRORS,
    summary="Businesses this key may query.",
)
async def businesses(
    ctx: ServingContext = Depends(get_ctx), principal: Principal = Depends(get_principal)
) -> list[BusinessOut]:
    state = ctx.holder.current
    out = []
    for info in ctx.loader.businesses():
        if not principal.may_query(info.name):
            continue
        champion = state.model(info.name, "champion") if state else None
        challenger = state.model(info.name, "challenger") if state else None
        out.append(
            BusinessOut(
                name=info.name,
                description=info.description,
                model_version=champion.version if champion else "",
                challenger_version=challenger.version if challenger else None,
                challenger_share=ctx.settings.serving.ab_split.get(info.name, 0.0) if challenger else 0.0,
                index_version=state.index_version if state else "",
            )
        )
    return out


@router.get("/healthz", summary="Liveness: the process answers.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.head("/healthz", include_in_schema=False)
async def healthz_head() -> Response:
    """HEAD /healthz: the same 200 without a body (load balancers probe with HEAD)."""
    return Response(status_code=200)


@router.get("/readyz", summary="Readiness: a serving state is loaded and the model batcher runs.")
async def readyz(ctx: ServingContext = Depends(get_ctx)) -> JSONResponse:
    state = ctx.holder.current
    ready = state is not None and ctx.batcher.running and not ctx.stopping
    body = {
        "ready": ready,
        "state_id": state.id if state else None,
        "index_version": state.index_version if state else None,
        "models": [list(m) for m in state.versions.models] if state else [],
        "adapters_loaded": len(ctx.scorer.adapters) if ctx.scorer is not None else 0,
        "reload_error": ctx.holder.last_error,  # set while the latest reload failed (old state serving)
        "batch_mode": ctx.batcher.mode,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics.", include_in_schema=True)
async def metrics(ctx: ServingContext = Depends(get_ctx)) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
