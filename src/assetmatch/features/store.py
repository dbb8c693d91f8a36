"""The Feast store of assetmatch, built in code from the settings, and materialization.

feature_repo/feature_store.yaml serves the `feast` CLI; here the same RepoConfig is built from the
settings so that nothing machine-specific is written down:
- the offline sources (relative paths in feature_repo/data_sources.py) resolve under `lake.uri`;
- the registry and the SQLite online store live in `feast.data_dir`;
- `feast.online_store: redis` + `feast.redis_connection` switches the online store, no code change.

The repository's objects are loaded from `feast.repo_path` (the same Python files `feast apply` reads)
and applied with `store.apply([...])`. Import this module lazily: it imports Feast (6-8 s).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureStore, FeatureView, RepoConfig
from feast.data_source import DataSource

from assetmatch.config import ConfigError, Settings
from assetmatch.features import journal_path
from assetmatch.features.build import FeatureTables, FeatureWrite, build_features
from assetmatch.lake.delta import Lake

log = logging.getLogger(__name__)

REPO_MODULES = ("data_sources", "entities", "features", "feature_services")
COARSE_SERVICE = "coarse_ranker_v1"
PAIR_SERVICE = "set_selection_v1"
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def feature_repo_path(settings: Settings) -> Path:
    """The configured feature repository folder (relative to the working directory, else to the project)."""
    configured = Path(settings.feast.repo_path)
    for candidate in (configured, _PROJECT_ROOT / configured):
        if (candidate / "feature_services.py").exists():
            return candidate.resolve()
    raise ConfigError(
        f"feast.repo_path: no Feast repository at {configured} (expected {', '.join(REPO_MODULES)}.py there)"
    )


@dataclass
class RepoObjects:
    """Everything defined in the feature repository, ready for `store.apply`."""

    entities: list[Entity] = field(default_factory=list)
    data_sources: list[DataSource] = field(default_factory=list)
    feature_views: list[FeatureView] = field(default_factory=list)
    feature_services: list[FeatureService] = field(default_factory=list)

    def all(self) -> list[Any]:
        return [*self.entities, *self.data_sources, *self.feature_views, *self.feature_services]


def load_repo_objects(repo_path: Path) -> RepoObjects:
    """Import the repository's modules the way `feast apply` does and collect its objects.

    The modules import each other by plain name (`from entities import asset`), as Feast repositories
    do, so the folder goes on sys.path while they load. Not feast.repo_operations.parse_repo: that one
    derives module names from the current working directory.

    The modules are executed afresh on every call: `apply` mutates the objects it registers (it adds
    the entity column to each view's schema), so a second caller must not get the mutated ones.
    """
    objects = RepoObjects()
    added = str(repo_path) not in sys.path
    if added:
        sys.path.insert(0, str(repo_path))
    try:
        for name in REPO_MODULES:
            sys.modules.pop(name, None)
        modules = [importlib.import_module(name) for name in REPO_MODULES]
    finally:
        if added:
            sys.path.remove(str(repo_path))
    seen: set[int] = set()
    for module in modules:
        for value in vars(module).values():
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, Entity):
                objects.entities.append(value)
            elif isinstance(value, DataSource):
                objects.data_sources.append(value)
            elif isinstance(value, FeatureView):
                objects.feature_views.append(value)
            elif isinstance(value, FeatureService):
                objects.feature_services.append(value)
    return objects


def _local_root(uri: str) -> Path:
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"lake.uri: Feast's file offline store needs a local lake folder, got {uri!r}")
    return Path(uri.removeprefix("file://")).resolve()


def repo_config(settings: Settings, project: str | None = None) -> RepoConfig:
    """The RepoConfig for these settings: local provider, file offline store over the lake, sqlite registry."""
    data_dir = Path(settings.feast.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any]
    if settings.feast.online_store == "redis":
        online = {"type": "redis", "connection_string": settings.feast.redis_connection.get_secret_value()}
    else:
        online = {"type": "sqlite", "path": str(data_dir / "online_store.db")}
    return RepoConfig(
        project=project or settings.feast.project,
        provider="local",
        registry={"registry_type": "file", "path": str(data_dir / "registry.db"), "cache_ttl_seconds": 60},
        online_store=online,
        offline_store={"type": "file"},
        repo_path=_local_root(settings.lake.uri),
        entity_key_serialization_version=3,
    )


def open_store(settings: Settings, project: str | None = None) -> FeatureStore:
    """A FeatureStore for these settings (nothing applied; see `apply_repo`)."""
    config = repo_config(settings, project)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


def apply_repo(store: FeatureStore, settings: Settings) -> RepoObjects:
    """Register the feature repository's objects in the store's registry (idempotent)."""
    objects = load_repo_objects(feature_repo_path(settings))
    store.apply(objects.all())
    return objects


def loadable_views(views: list[FeatureView], tables: FeatureTables) -> tuple[list[str], dict[str, str]]:
    """The feature views whose offline table holds rows, and why each other one is not loaded.

    A lake without a query log has no table pair queried together: the co-usage table exists but holds
    no rows, and Feast's file offline store fails reading a folder without a parquet file. Such a view
    is left out of the online load; reads of it give `build.DEFAULTS` (which is what "never queried
    together" means), and it is loaded on the first run after its table gets rows.
    """
    loadable: list[str] = []
    skipped: dict[str, str] = {}
    for view in views:
        source = getattr(view.batch_source, "path", "")
        if source and tables.rows(tables.path(source)) == 0:
            skipped[view.name] = f"its offline table {source} holds no rows yet: reads give the defaults"
        else:
            loadable.append(view.name)
    return sorted(loadable), skipped


@dataclass
class MaterializeReport:
    """What `materialize` did: the feature build (with the pinned lake versions) and the online load."""

    project: str
    online_store: str
    features: FeatureWrite
    start: datetime | None
    end: datetime
    mode: str  # "incremental" | "full"
    views: list[str] = field(default_factory=list)  # feature views loaded into the online store
    skipped_views: dict[str, str] = field(default_factory=dict)  # view -> why it was not loaded

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "online_store": self.online_store,
            "mode": self.mode,
            "materialized_from": self.start.isoformat() if self.start else "last run (incremental)",
            "materialized_to": self.end.isoformat(),
            "materialized_views": self.views,
            "skipped_views": self.skipped_views,
            **self.features.as_dict(),
        }


def materialize(
    settings: Settings,
    *,
    full: bool = False,
    now: datetime | None = None,
    project: str | None = None,
    progress: Any = None,
) -> MaterializeReport:
    """Compute due feature snapshots from the lake (pinned versions), apply the repo, load the online store.

    Incremental: new snapshot days are appended and `materialize_incremental` loads what is new since
    the last run. `full=True` rebuilds every snapshot and reloads the online store over the whole window.
    The run is appended to `<feast.data_dir>/materializations.jsonl`.
    """
    now = now or datetime.now(UTC)
    lake = Lake.from_settings(settings)
    written = build_features(
        lake,
        full=full,
        now=now,
        history_days=settings.feast.history_days,
        progress=progress,
        shared=[b.name for b in settings.businesses if b.shared],
    )
    store = open_store(settings, project)
    objects = apply_repo(store, settings)
    views, skipped = loadable_views(objects.feature_views, FeatureTables(lake))
    for name, why in skipped.items():
        log.info("feature view %s not loaded: %s", name, why)
    # Feast's interval is [start, end): end just past `now` so a snapshot stamped exactly now is included.
    end = now + timedelta(seconds=1)
    start: datetime | None = None
    if full and written.first_snapshot is not None:
        start = written.first_snapshot - timedelta(seconds=1)
        if views:  # an empty list would mean "every view" to Feast
            store.materialize(start_date=start, end_date=end, feature_views=views)
    elif views:
        store.materialize_incremental(end_date=end, feature_views=views)
    report = MaterializeReport(
        project=store.project,
        online_store=settings.feast.online_store,
        features=written,
        start=start,
        end=end,
        mode="full" if full else "incremental",
        views=views,
        skipped_views=skipped,
    )
    journal = journal_path(settings)
    with journal.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"at": now.isoformat(), **report.as_dict()}, sort_keys=True) + "\n")
    log.info("materialized features: %s", report.as_dict())
    return report


def teardown(store: FeatureStore) -> None:
    """Remove this project's online tables/keys and its registry entries (tests, decommissioning)."""
    store.teardown()
