"""MLflow tracking and model registry for the per-business rankers.

One experiment per business (`assetmatch-ranker/<business>`), created with its own
`artifact_location` (with SQLite tracking the artifacts would otherwise land in ./mlruns). Every
training run logs the RankerConfig and data provenance as params (base model, LoRA r / alpha /
targets, lake table versions, index manifest id, data fingerprint), the metrics (names never
contain '@'), the eval report and plot, and the adapter folder as artifacts. A run registers a
new version of `<registry_prefix><business>` and gets an alias (`challenger`); the A/B gate
moves `champion` (and keeps `previous` for rollback).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assetmatch.config import Settings
from assetmatch.ranking.finerank import LoraFineRanker
from assetmatch.tracking import prefect_run_tags
from assetmatch.training.pairs import TrainingData
from assetmatch.training.train import TrainResult

ADAPTER_ARTIFACT = "adapter"
FINGERPRINT_TAG = "assetmatch.data_fingerprint"
KIND_TAG = "assetmatch.kind"
COARSE_TAG = "assetmatch.coarse_fit"
"""Digest of the published coarse fit a training run's candidates came from (`coarse_fit_digest`)."""


def _as_uri(location: str) -> str:
    """A local folder becomes a file:// URI (MLflow needs one); URIs with a scheme pass through."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location):
        return location
    return Path(location).expanduser().resolve().as_uri()


@dataclass
class VersionInfo:
    """One registered version, as `assetmatch models list` shows it."""

    business: str
    name: str
    version: str
    aliases: list[str]
    run_id: str
    created_ms: int
    tags: dict[str, str]


class Registry:
    """Experiments, runs and registered ranker versions of every business."""

    def __init__(self, tracking_uri: str, artifact_location: str, prefix: str = "assetmatch-ranker-") -> None:
        from mlflow.tracking import MlflowClient

        # MLflow draws a progress bar for every artifact download: each adapter fetched by training,
        # the gate and serving printed one into the CLI's output and the service's log. Off unless
        # the environment turns it on.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location
        self.prefix = prefix
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(
                parents=True, exist_ok=True
            )
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        m = settings.mlflow
        return cls(m.tracking_uri, m.artifact_location, m.registry_prefix)

    # ---- names -----------------------------------------------------------------------------
    def model_name(self, business: str) -> str:
        return f"{self.prefix}{business}"

    def experiment_name(self, business: str) -> str:
        return f"assetmatch-ranker/{business}"

    def experiment_id(self, business: str) -> str:
        name = self.experiment_name(business)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        location = _as_uri(f"{self.artifact_location.rstrip('/')}/{business}")
        return str(self.client.create_experiment(name, artifact_location=location))

    # ---- runs ------------------------------------------------------------------------------
    def log_training(
        self,
        business: str,
        result: TrainResult,
        data: TrainingData,
        index_manifest: str = "",
        started_ms: int | None = None,
        coarse_fit: str = "none",
    ) -> str:
        """Log one training run (params, metrics, report, plot, adapter). Returns the run id.

        `coarse_fit`: digest of the coarse fit the candidates came from (tagged; 'none': not a
        published fit's).

        `started_ms`: when the training began (epoch ms): the run starts then and ends once logged, so
        MLflow shows the training's real duration (default: now). Inside a Prefect run the run is
        tagged with the Prefect flow run (`assetmatch.tracking.prefect_run_tags`)."""
        from mlflow.entities import Metric, Param, RunTag

        params = {
            "business": business,
            "base_model": result.config.base,
            "lora_r": str(result.config.lora_r),
            "lora_alpha": str(result.config.lora_alpha),
            "lora_targets": result.config.targets_text(),
            "index_manifest": index_manifest or "none",
            "data_fingerprint": data.fingerprint,
            **{f"data.lake_version.{t}": str(v) for t, v in data.lake_versions.items()},
            **{f"data.count.{k}": str(v) for k, v in result.data_counts.items()},
            **{f"data.pairs.{k}": str(v) for k, v in result.fit.pair_kinds.items()},
            **result.config.to_params(),
        }
        tags = {
            KIND_TAG: "train",
            FINGERPRINT_TAG: data.fingerprint,
            COARSE_TAG: coarse_fit,
            "business": business,
            **prefect_run_tags(),
        }
        run = self.client.create_run(
            self.experiment_id(business), start_time=started_ms, tags=tags, run_name=f"train-{business}"
        )
        run_id = run.info.run_id
        try:
            now = int(run.info.start_time or 0)
            metrics = [Metric(k, float(v), now, 0) for k, v in result.metrics().items()]
            metrics += [Metric("train_loss", loss, now, i) for i, loss in enumerate(result.fit.losses)]
            metrics += [  # the validation curve, one point per check
                Metric(f"val_{name}", float(value), now, int(point["step"]))
                for point in result.fit.curve
                for name, value in point.items()
                if name != "step"
            ]
            self.client.log_batch(
                run_id,
                metrics=metrics[:1000],
                params=[Param(k, v[:6000]) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            for start in range(1000, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
            self.client.log_dict(
                run_id, {k: r.to_dict() for k, r in result.reports.items()}, "eval_report.json"
            )
            self.client.log_dict(run_id, result.config.to_dict(), "ranker_config.json")
            for name in ("eval_plot.png", "validation_curve.png"):
                plot = result.adapter_dir / name
                if plot.exists():
                    self.client.log_artifact(run_id, str(plot))
            self.client.log_artifacts(run_id, str(result.adapter_dir), ADAPTER_ARTIFACT)
        except Exception:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def last_training_tags(self, business: str) -> dict[str, str]:
        """Tags of the latest finished training run ({}: never trained)."""
        exp = self.client.get_experiment_by_name(self.experiment_name(business))
        if exp is None:
            return {}
        runs = self.client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{KIND_TAG}` = 'train' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return dict(runs[0].data.tags) if runs else {}

    def last_fingerprint(self, business: str) -> str | None:
        """Data fingerprint of the latest finished training run (None: never trained)."""
        return self.last_training_tags(business).get(FINGERPRINT_TAG)

    # ---- registry --------------------------------------------------------------------------
    def register(self, business: str, run_id: str, alias: str | None = "challenger") -> str:
        """New version of `<prefix><business>` from the run's adapter; returns the version number."""
        from mlflow.exceptions import MlflowException

        name = self.model_name(business)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(
                name, tags={"business": business}, description=f"LoRA fine ranker of business {business}"
            )
        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri.rstrip('/')}/{ADAPTER_ARTIFACT}"
        mv = self.client.create_model_version(name, source=source, run_id=run_id, tags={"business": business})
        if alias:
            self.client.set_registered_model_alias(name, alias, str(mv.version))
        return str(mv.version)

    def version_by_alias(self, business: str, alias: str) -> Any | None:
        """The ModelVersion behind `alias`, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.model_name(business), alias)
        except MlflowException:
            return None

    def set_alias(self, business: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name(business), alias, str(version))

    def delete_alias(self, business: str, alias: str) -> None:
        self.client.delete_registered_model_alias(self.model_name(business), alias)

    def tag_version(self, business: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name(business), str(version), key, value)

    def versions(self, business: str) -> list[VersionInfo]:
        """All versions of the business's model, newest first, with their aliases."""
        from mlflow.exceptions import MlflowException

        name = self.model_name(business)
        try:
            model = self.client.get_registered_model(name)
        except MlflowException:
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            by_version.setdefault(str(version), []).append(alias)
        out = [
            VersionInfo(
                business,
                name,
                str(mv.version),
                sorted(by_version.get(str(mv.version), [])),
                mv.run_id or "",
                int(mv.creation_timestamp or 0),
                dict(mv.tags or {}),
            )
            for mv in self.client.search_model_versions(f"name = '{name}'")
        ]
        return sorted(out, key=lambda v: -int(v.version))

    def businesses(self) -> list[str]:
        """Businesses with a registered ranker model."""
        names = [m.name for m in self.client.search_registered_models()]
        return sorted(  # "_shared" is the shared adapter, not a business
            n.removeprefix(self.prefix)
            for n in names
            if n.startswith(self.prefix) and n != f"{self.prefix}_shared"
        )

    def download_adapter(self, business: str, version: str, dst: str | Path) -> Path:
        """Download a version's adapter folder to `dst` (reused when already there)."""
        mv = self.client.get_model_version(self.model_name(business), str(version))
        if not mv.run_id:
            raise ValueError(f"{self.model_name(business)} version {version} has no run to download from")
        target = Path(dst)
        if (target / "adapter_config.json").exists():
            return target
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            local = Path(self.client.download_artifacts(mv.run_id, ADAPTER_ARTIFACT, tmp))
            for item in local.iterdir():
                shutil.move(str(item), str(target / item.name))
        return target

    def log_decision(self, business: str, version: str, decision: dict[str, Any]) -> None:
        """Record an A/B decision on the challenger version (tags) and on its training run."""
        flat = {
            "gate.verdict": str(decision["verdict"]),
            "gate.reason": str(decision["reason"])[:5000],
            "gate.decision_id": str(decision["decision_id"]),
            "gate.metrics": json.dumps(decision["metrics"], sort_keys=True)[:5000],
        }
        self.tag_version(business, version, flat)
        mv = self.client.get_model_version(self.model_name(business), str(version))
        if mv.run_id:
            for key, value in flat.items():
                self.client.set_tag(mv.run_id, key, value)


def load_fine_ranker(
    settings: Settings,
    businesses: Sequence[str] | None = None,
    alias: str = "champion",
    cache_dir: str | Path | None = None,
    mixed: bool = True,
) -> LoraFineRanker:
    """A `LoraFineRanker` with every business's `alias` version from the MLflow registry (businesses
    without one are skipped), on the base, device, token budget and quantization of `settings.ranker`."""
    registry = Registry.from_settings(settings)
    ranker = LoraFineRanker.from_settings(settings, mixed)
    root = Path(cache_dir or Path(settings.training.adapters_dir) / "registry-cache")
    for business in businesses or settings.business_names():
        mv = registry.version_by_alias(business, alias)
        if mv is None:
            continue
        folder = registry.download_adapter(business, str(mv.version), root / business / str(mv.version))
        ranker.add(business, folder, f"{registry.model_name(business)}/{mv.version}")
    return ranker
