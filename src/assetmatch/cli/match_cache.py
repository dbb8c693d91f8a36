"""What `assetmatch match` keeps between calls, so that one answer loads only what it needs.

A command line process answers one requirement and exits; the API server answers many and keeps
everything in memory instead. Two loads cost seconds per call and are avoided while what they read
has not changed:

- **Stored features** (Feast): opening the feature store imports Feast (5-10 s). The coarse model's
  stored features of every table of the published index are copied once into a small JSON file
  under `<recall.index_root>/.cache/`, stamped with the SQLite online store's and the Feast
  registry's size and modification time; a later call reads the file while the stamp still
  matches, and Feast again as soon as a materialization or `feast apply` changes either file.
  A Redis online store has no such stamp: it is read through Feast every time.
- **The champion adapter** (MLflow, torch): which version is the business's champion is read from
  the MLflow registry once and kept in the same folder, stamped with the SQLite tracking
  database's size and modification time (any registry change rewrites it); the adapter folder and
  its calibration (cascade, fusion, selection) are read without torch. The base model and the
  adapter are only loaded when the cascade decides to fine-rank this requirement.

Every cache file is best effort: unreadable or stale means the slow path, never another answer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assetmatch.config import Settings
    from assetmatch.matching.fine import FineCalibration
    from assetmatch.matching.types import FeatureProvider, FineRanker
    from assetmatch.models import TableAsset
    from assetmatch.recall.index import IndexSet
    from assetmatch.types import Siblings

log = logging.getLogger(__name__)

FEATURES_FILE = "online-features.json"
CHAMPIONS_FILE = "champions.json"


def cache_folder(settings: Settings) -> Path:
    """Where `assetmatch match` keeps its caches (publishing an index never touches a dot folder)."""
    return Path(settings.recall.index_root) / ".cache"


def file_stamp(*paths: Path) -> list[list[Any]] | None:
    """Size and modification time (ns) of each file, None when one of them does not exist."""
    out: list[list[Any]] = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            return None
        out.append([str(path), stat.st_size, stat.st_mtime_ns])
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically; a folder that cannot be written only means no cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.debug("cache %s not written: %s", path, exc)


# ---- stored features ------------------------------------------------------------------------------
def _feature_stamp(settings: Settings) -> dict[str, Any] | None:
    """What the online features depend on, or None when it cannot be told from files (Redis)."""
    if settings.feast.online_store != "sqlite":
        return None
    data_dir = Path(settings.feast.data_dir)
    files = file_stamp(data_dir / "online_store.db", data_dir / "registry.db")
    if files is None:
        return None
    wal = file_stamp(data_dir / "online_store.db-wal")  # written but not yet checkpointed rows
    return {"project": settings.feast.project, "files": files + (wal or [])}


class SnapshotFeatures:
    """A FeatureProvider answering `online` from a snapshot of every indexed table's stored features
    (what `FeastFeatureProvider.online` gave for them when the snapshot was taken)."""

    def __init__(self, feature_names: Sequence[str], values: dict[str, list[float]], live: Any) -> None:
        self.feature_names = list(feature_names)
        self.values = values
        self._live = live  # () -> FeastFeatureProvider, for a table the snapshot does not have

    def online(self, asset_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        wanted = list(dict.fromkeys(asset_ids))
        unknown = [a for a in wanted if a not in self.values]
        fetched = self._live().online(unknown) if unknown else {}
        out = {}
        for asset_id in wanted:
            if asset_id in self.values:
                out[asset_id] = dict(zip(self.feature_names, self.values[asset_id]))
            else:
                out[asset_id] = fetched[asset_id]
        return out

    def historical(self, rows: Sequence[Any]) -> list[dict[str, float]]:
        return list(self._live().historical(rows))


def online_features(settings: Settings, index: IndexSet) -> FeatureProvider:
    """The Feast provider of `settings` for a one-shot process: the snapshot of the index's tables
    when the online store has not changed since it was taken, else Feast (and a new snapshot)."""
    live: list[Any] = []

    def provider() -> Any:
        if not live:
            from assetmatch.features.provider import FeastFeatureProvider

            live.append(FeastFeatureProvider(settings))
        return live[0]

    stamp = _feature_stamp(settings)
    if stamp is None:
        return provider()  # type: ignore[no-any-return]
    path = cache_folder(settings) / FEATURES_FILE
    cached = _read_json(path)
    key = {"stamp": stamp, "index": index.id}
    if cached is not None and cached.get("key") == key:
        return SnapshotFeatures(cached["names"], cached["values"], provider)
    from prometheus_client import REGISTRY

    def store_errors() -> float:
        value = REGISTRY.get_sample_value("assetmatch_feature_defaults_total", {"reason": "store_error"})
        return value or 0.0

    feast = provider()
    before = store_errors()
    read = feast.online(index.asset_ids)
    if store_errors() == before and _feature_stamp(settings) == stamp:  # a failed or racing read is not kept
        names = list(feast.feature_names)
        _write_json(
            path,
            {"key": key, "names": names, "values": {a: [read[a][n] for n in names] for a in index.asset_ids}},
        )
    return feast  # type: ignore[no-any-return]


# ---- the champion adapter --------------------------------------------------------------------------
def _registry_stamp(settings: Settings) -> list[list[Any]] | None:
    uri = settings.mlflow.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    return file_stamp(Path(uri.removeprefix("sqlite:///")).expanduser())


def _resolve_champion(settings: Settings, business: str, folder_root: Path) -> dict[str, Any]:
    """{'version', 'model_version', 'folder'} of the business's champion, or {'none': why} (MLflow)."""
    from assetmatch.registry.mlflow import Registry

    registry = Registry.from_settings(settings)
    mv = registry.version_by_alias(business, "champion")
    if mv is None:
        return {"none": f"none ({business} has no champion adapter)"}
    version = str(mv.version)
    folder = registry.download_adapter(business, version, folder_root / business / version)
    return {
        "version": version,
        "model_version": f"{registry.model_name(business)}/{version}",
        "folder": str(folder),
    }


class LazyChampion:
    """The FineRanker of one business's champion adapter whose model loads on the first `logits`
    call: the version and calibration answer the cascade without torch."""

    def __init__(self, settings: Settings, business: str, folder: Path, model_version: str) -> None:
        from assetmatch.matching.fine import read_calibration

        self.settings = settings
        self.business = business
        self.folder = folder
        self.model_version = model_version
        self._calibration = read_calibration(folder)
        self._ranker: Any = None

    def version(self, business: str) -> str:
        return self.model_version if business == self.business else ""

    def calibration(self, business: str) -> FineCalibration:
        if business != self.business:
            from assetmatch.matching.fine import FineCalibration

            return FineCalibration()
        return self._calibration

    def loaded(self) -> bool:
        return self._ranker is not None

    def logits(
        self,
        business: str,
        requirement: str,
        assets: Sequence[TableAsset],
        examples: Mapping[str, str] | None = None,
        siblings: Siblings | None = None,
    ) -> list[float]:
        if self._ranker is None:
            # what registry.mlflow.load_fine_ranker builds, for the adapter folder already resolved
            from assetmatch.ranking.finerank import LoraFineRanker

            self._ranker = LoraFineRanker.from_settings(self.settings)
            self._ranker.add(self.business, self.folder, self.model_version)
        return list(self._ranker.logits(business, requirement, assets, examples, siblings))


def champion_ranker(settings: Settings, business: str) -> tuple[FineRanker | None, str]:
    """The business's champion adapter as a lazily loaded fine ranker, or (None, why not).

    A registry that does not exist yet is not created; a registry that cannot be read leaves the
    answer coarse-only and says so."""
    uri = settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).expanduser().exists():
        return None, "none (no MLflow registry yet)"
    root = Path(settings.training.adapters_dir) / "registry-cache"
    stamp = _registry_stamp(settings)
    path = cache_folder(settings) / CHAMPIONS_FILE
    cached = _read_json(path) or {}
    entry = cached.get("businesses", {}).get(business) if cached.get("stamp") == stamp and stamp else None
    try:
        if not isinstance(entry, dict) or ("folder" in entry and not Path(entry["folder"]).is_dir()):
            entry = _resolve_champion(settings, business, root)
            if stamp is not None and _registry_stamp(settings) == stamp:
                kept = cached.get("businesses", {}) if cached.get("stamp") == stamp else {}
                _write_json(path, {"stamp": stamp, "businesses": {**kept, business: entry}})
        if "none" in entry:
            return None, str(entry["none"])
        return LazyChampion(settings, business, Path(entry["folder"]), str(entry["model_version"])), ""
    except Exception as exc:  # the registry is optional for a coarse answer
        return None, f"unavailable ({type(exc).__name__}: {exc})"
