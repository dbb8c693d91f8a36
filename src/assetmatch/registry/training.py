"""Train from the lake and register in MLflow: the shared adapter (`run_shared_training`), one
business's adapter (`run_training`, step 0 and step 8 around `training.train.train_business`), and
whether a business needs one (`plan_training`: its data fingerprint against the last run's).
Training itself (`assetmatch.training`) knows nothing of the registry; this layer sits above it."""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assetmatch.config import Settings
from assetmatch.lake.delta import Lake
from assetmatch.matching.matcher import coarse_fit_digest
from assetmatch.ranking.candidates import production_candidates
from assetmatch.ranking.config import RankerConfig
from assetmatch.registry.mlflow import COARSE_TAG, FINGERPRINT_TAG, Registry
from assetmatch.training.pairs import TrainingData, fingerprint, labelled_from_lake
from assetmatch.training.starting import resolve_starting_adapter
from assetmatch.training.train import (
    CoarseSource,
    TrainResult,
    business_inputs,
    calibrate_adapter,
    ranker_config,
    train_business,
)


def _now_ms() -> int:
    """Epoch milliseconds: when a training starts, the start of its MLflow run."""
    return int(time.time() * 1000)


SHARED = "_shared"
"""Registry name of the shared adapter (all businesses' data); it is never a business itself."""
SHARED_ALIAS = "current"  # "latest" is reserved by MLflow
CHALLENGER_SHARED = "challenger-shared"
"""Alias of the shared adapter calibrated for one business: the gate's third arm."""
KIND_TAG = "ranker.kind"


def run_shared_training(
    settings: Settings,
    businesses: list[str],
    config: RankerConfig | None = None,
    progress: Any = None,
    index_manifest: str = "",
) -> tuple[TrainResult, str]:
    """Train the shared adapter on every listed business's data (each requirement ranked in its own
    business's coarse lists) and register it as `<prefix>_shared@current`: the general skill the
    per-business adapters start from. Trained with `training.ranker` overridden by
    `training.shared_ranker` unless `config` is given. Its validation curve reads every business's
    held-out requirements; its judging and calibration are per business (`run_training` registers
    it calibrated for each as `challenger-shared`), so its own report is coarse-only's. Returns
    (result, version)."""
    lake = Lake.from_settings(settings)
    config = config or ranker_config(settings, **settings.training.shared_ranker)
    parts = [business_inputs(lake, settings, b, config) for b in businesses]
    library = {a.asset_id: a for _, visible in parts for a in visible}
    pooled = TrainingData(
        SHARED,
        [r for data, _ in parts for r in data.train],
        [r for data, _ in parts for r in data.validation],
        [r for data, _ in parts for r in data.synthetic],
        parts[0][0].lake_versions if parts else {},
        hashlib.sha256("".join(data.fingerprint for data, _ in parts).encode()).hexdigest(),
    )
    coarse_fit = coarse_fit_digest(settings)  # before the candidates that read it
    candidates = production_candidates(settings, list(library.values()))
    out_dir = Path(settings.training.adapters_dir) / SHARED / time.strftime("%Y%m%dT%H%M%S")
    started = _now_ms()
    result = train_business(
        SHARED,
        pooled,
        list(library.values()),
        candidates,
        config,
        out_dir,
        progress=progress,
        init_from=resolve_starting_adapter(settings.training.starting_adapter, config.base),
        quantize=settings.ranker.quantize,
        evaluate=False,  # judged and calibrated per business, by `run_training`
        threads=settings.serving.torch_threads,
    )
    registry = Registry.from_settings(settings)
    run_id = registry.log_training(
        SHARED, result, pooled, index_manifest=index_manifest, started_ms=started, coarse_fit=coarse_fit
    )
    version = registry.register(SHARED, run_id, alias=SHARED_ALIAS)
    registry.tag_version(SHARED, version, {KIND_TAG: "shared", "businesses": ",".join(businesses)})
    return result, version


def run_training(
    settings: Settings,
    business: str,
    candidates: CoarseSource | None = None,
    config: RankerConfig | None = None,
    progress: Any = None,
    index_manifest: str = "",
) -> tuple[TrainResult, str]:
    """Train `business` from the lake and register it as `challenger`. Returns (result, model version).

    Candidates are the production ones (`ranking.candidates.production_candidates`: the published
    recall + coarse model, out of fold for the requirements it was fitted on) unless given. When a
    shared adapter is registered (`run_shared_training`), the business's adapter starts from it, and
    the shared adapter calibrated for this business is registered too, as `challenger-shared`: the
    gate then chooses among coarse-only (or the champion), shared and per-business."""

    # 0. read the lake: the business's live tables (and the shared ones it sees), labelled requirements
    lake = Lake.from_settings(settings)
    config = config or ranker_config(settings)
    data, visible = business_inputs(lake, settings, business, config)
    coarse_fit = coarse_fit_digest(settings) if candidates is None else "none"
    candidates = candidates or production_candidates(settings, visible)

    registry = Registry.from_settings(settings)
    champion = registry.version_by_alias(business, "champion")
    shared = registry.version_by_alias(SHARED, SHARED_ALIAS) if settings.training.shared_adapter else None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = Path(settings.training.adapters_dir) / business / stamp
    with tempfile.TemporaryDirectory() as tmp:
        champion_dir = (
            registry.download_adapter(business, str(champion.version), Path(tmp) / "champion")
            if champion
            else None
        )
        shared_dir = (
            registry.download_adapter(SHARED, str(shared.version), Path(tmp) / "shared") if shared else None
        )
        starting = (
            resolve_starting_adapter(settings.training.starting_adapter, config.base)
            if shared_dir is None
            else None
        )
        started = _now_ms()
        result = train_business(
            business,
            data,
            visible,
            candidates,
            config,
            out_dir,
            champion_dir,
            progress,
            init_from=shared_dir or starting,
            quantize=settings.ranker.quantize,
            threads=settings.serving.torch_threads,
        )
        if shared is not None and shared_dir is not None:
            shared_started = _now_ms()
            shared_result = calibrate_adapter(
                business,
                shared_dir,
                data,
                visible,
                candidates,
                Path(out_dir.parent) / f"{stamp}-shared",
                settings.ranker.quantize,
                settings.serving.torch_threads,
            )
            run_id = registry.log_training(
                business,
                shared_result,
                data,
                index_manifest=index_manifest,
                started_ms=shared_started,
                coarse_fit=coarse_fit,
            )
            version = registry.register(business, run_id, alias=CHALLENGER_SHARED)
            registry.tag_version(
                business, version, {KIND_TAG: "shared", "shared_version": str(shared.version)}
            )

    # 8. log params, metrics, report, plots and adapter to MLflow; register as `challenger`
    run_id = registry.log_training(
        business, result, data, index_manifest=index_manifest, started_ms=started, coarse_fit=coarse_fit
    )
    version = registry.register(business, run_id, alias="challenger")
    if shared_dir is not None:
        kind = "business-from-shared"
    elif starting is not None:
        kind = "business-from-starting"
    else:
        kind = "business"
    registry.tag_version(business, version, {KIND_TAG: kind})
    return result, version


@dataclass
class TrainingPlan:
    """Whether a business needs a new adapter: its data fingerprint against the last run's, and
    whether the coarse model its candidates come from was refitted since (`coarse_refitted`)."""

    business: str
    fingerprint: str
    last_fingerprint: str | None
    labelled: int
    coarse_fit: str = "none"
    last_coarse_fit: str | None = None  # None: never trained, or trained before runs were tagged with it

    @property
    def changed(self) -> bool:
        return self.fingerprint != self.last_fingerprint

    @property
    def coarse_refitted(self) -> bool:
        """The published coarse fit is not the one the last training's candidates came from: the
        adapter's calibration (fusion with coarse scores, selection, cascade) is stale."""
        return self.last_coarse_fit is not None and self.coarse_fit != self.last_coarse_fit


def plan_training(settings: Settings, businesses: list[str] | None = None) -> list[TrainingPlan]:
    """One plan per business: fingerprint of (labelled requirements, library) vs the last MLflow run,
    and the published coarse fit vs the one that run trained on."""
    lake = Lake.from_settings(settings)
    registry = Registry.from_settings(settings)
    names = businesses or settings.business_names() or sorted({a.business for a in lake.read_assets()})
    coarse_fit = coarse_fit_digest(settings)
    plans = []
    for business in names:
        assets = lake.read_assets(businesses=[business])
        labelled = labelled_from_lake(lake, business, {a.asset_id for a in assets})
        last = registry.last_training_tags(business)
        plans.append(
            TrainingPlan(
                business,
                fingerprint(labelled, assets),
                last.get(FINGERPRINT_TAG),
                len(labelled),
                coarse_fit,
                last.get(COARSE_TAG),
            )
        )
    return plans
