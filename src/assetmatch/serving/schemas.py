"""Request and response bodies of the match API (pydantic; they also make the OpenAPI docs).

The hard bounds here protect the process whatever the config says; the configurable limits
(`settings.serving.max_requirement_chars`, `max_k`) are checked in the routes and answered with
the same 422 shape (see `assetmatch.serving.errors`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

BUSINESS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"
HARD_MAX_REQUIREMENT = 20_000
HARD_MAX_K = 1_000
MAX_ASSET_ID_CHARS = 512
MAX_USED_ASSETS = 200
MAX_SCOPE_DATABASES = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("names may not contain control characters")
    return value


AssetId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ASSET_ID_CHARS),
    AfterValidator(_no_control_characters),
]
DatabaseName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=256),
    AfterValidator(_no_control_characters),
]

Arm = Literal["champion", "challenger"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MatchRequest(_Body):
    business: str = Field(
        pattern=BUSINESS_PATTERN, description="The business (tenant) whose tables to search."
    )
    requirement: str = Field(
        min_length=1, max_length=HARD_MAX_REQUIREMENT, description="The analyst's requirement, any language."
    )
    k: int = Field(default=10, ge=1, le=HARD_MAX_K, description="How many ranked tables to return.")
    explain: bool = Field(default=False, description="Add per-path scores and reasons to every table.")
    databases: list[DatabaseName] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SCOPE_DATABASES,
        description="The request's scope: answer only with tables of these databases (e.g. the one a "
        "Text2SQL session is connected to). Tables of the same name in other databases are then never "
        "confused with them. Each must hold a table the business may see (else 422). Default: all.",
    )
    user_id: str | None = Field(
        default=None,
        max_length=256,
        description="Caller-side user id; keeps a user on the same A/B arm. Without it the champion serves.",
    )
    deadline_ms: int | None = Field(
        default=None,
        ge=1,
        le=3_600_000,
        description="Answer within this many milliseconds of arrival: when the fine ranker could not finish "
        "in time, the coarse ranking answers (degraded=true). Also the X-Request-Deadline-Ms header; "
        "with both, the shorter wins.",
    )


class TableOut(BaseModel):
    asset_id: str = Field(description="Stable id of the table.")
    name: str = Field(description="Table name.")
    rank: int = Field(description="1-based rank in this answer.")
    score: float = Field(description="Final score (fine if the ranker ran, else coarse).")
    coarse_score: float = Field(description="Fused recall score.")
    fine_score: float | None = Field(default=None, description="LoRA ranker score, when one ran.")
    selected: bool = Field(description="Whether the table is in the selected set.")
    reasons: list[str] | None = Field(default=None, description="Why it matched (explain=true only).")
    path_scores: dict[str, float] | None = Field(
        default=None, description="Recall path -> score (explain only)."
    )


class MatchResponse(BaseModel):
    request_id: str = Field(description="Send it back with POST /v1/feedback.")
    business: str
    requirement: str
    tables: list[TableOut] = Field(description="Ranked tables, best first.")
    selected: list[str] = Field(description="Asset ids of the selected set, in rank order.")
    model_version: str = Field(description="Ranker version that scored ('' when coarse only).")
    index_version: str = Field(description="Id of the index manifest that recalled.")
    arm: Arm = Field(description="A/B arm that served this answer.")
    cached: bool = Field(description="Served from the response cache.")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Stage -> milliseconds.")
    fine_depth: int = Field(
        default=0, description="Tables the fine ranker (LoRA) scored; 0 when the coarse ranking answered."
    )
    fine_skipped: str = Field(
        default="",
        description="Why the business's fine ranker did not run (the cascade kept the coarse answer); "
        "'' when it ran or the business has none.",
    )
    degraded: bool = Field(
        default=False,
        description="The fine ranker would have run but was overloaded (its queue over "
        "serving.fine_wait_budget_ms) or could not meet the deadline: the coarse ranking answered.",
    )
    coarse_model: str = Field(
        default="",
        description="What the coarse ranking was fitted on: fusion (untrained), synthetic (metadata only), "
        "labelled or blended — how much to trust the answer.",
    )


class FeedbackRequest(_Body):
    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="request_id of a /v1/match answer.")
    used_assets: list[AssetId] = Field(
        max_length=MAX_USED_ASSETS,
        description="Asset ids the caller really used (e.g. in the final SQL): tables of the answer, or "
        f"other tables of the same business or a shared library. At most {MAX_USED_ASSETS} ids of at most "
        f"{MAX_ASSET_ID_CHARS} characters, no control characters.",
    )


class FeedbackResponse(BaseModel):
    request_id: str
    accepted: bool
    duplicate: bool = Field(
        default=False,
        description="The same feedback was already recorded for this request: stored once, not again.",
    )


class BusinessOut(BaseModel):
    name: str
    description: str
    model_version: str = Field(description="Champion ranker version ('' when none).")
    challenger_version: str | None = Field(default=None, description="Challenger version under A/B, if any.")
    challenger_share: float = Field(default=0.0, description="Share of users on the challenger.")
    index_version: str


class ErrorOut(BaseModel):
    error: str = Field(description="Short machine-readable kind: unauthorized, forbidden, invalid, ...")
    detail: str | list[dict[str, object]] = Field(description="What was wrong, for a human.")
    request_id: str | None = None
