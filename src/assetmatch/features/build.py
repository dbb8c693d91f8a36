"""Feature frames computed from the lake: daily snapshots that Feast reads as offline sources.

A snapshot at midnight UTC `T` describes every known table using only events strictly before `T`
(queries, feedback). Feast's point-in-time join gives a requirement made at time `t` the latest
snapshot with `T <= t`, so a query logged after the requirement can never leak into its features.

Usage and feedback features are exactly point-in-time. Metadata features (column count, comment
coverage, deprecated) come from the pinned version of the `assets` table: the lake keeps one row per
table, so older metadata is not reconstructed; `metadata_age_days` is measured from that row's
`updated_at` to `T` (0 when the row changed after `T`).

Everything here is pandas over Arrow tables read at pinned Delta versions; nothing imports Feast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake, read_delta

EVENT_TS = "event_timestamp"
CREATED_TS = "created_at"
ASSET_KEY = "asset_id"
PAIR_KEY = "pair_id"
PAIR_SEP = "|"

# Offline feature tables, relative to the lake folder (Feast's repo_path; see feature_repo/data_sources.py).
ASSET_FEATURES_PATH = "features/asset_features"
PAIR_FEATURES_PATH = "features/asset_pair_features"

NEVER_USED_DAYS = 365.0
USAGE_FEATURES = [
    "queries_7d",
    "queries_30d",
    "queries_90d",
    "users_30d",
    "days_since_last_use",
    "business_query_share",
    "feedback_used_30d",
    "feedback_use_rate",
]
METADATA_FEATURES = ["column_count", "comment_coverage", "metadata_age_days", "deprecated"]
ASSET_FEATURES = USAGE_FEATURES + METADATA_FEATURES
PAIR_FEATURES = ["co_queries_30d", "co_queries_90d"]
INT_FEATURES = {
    "queries_7d",
    "queries_30d",
    "queries_90d",
    "users_30d",
    "feedback_used_30d",
    "column_count",
    "deprecated",
    "co_queries_30d",
    "co_queries_90d",
}

# What a table without features (new, never materialized, store down) gets: "unused, unknown metadata".
DEFAULTS: dict[str, float] = {name: 0.0 for name in ASSET_FEATURES + PAIR_FEATURES}
DEFAULTS["days_since_last_use"] = NEVER_USED_DAYS

# Queries reading more tables than this are skipped for co-usage (pairs grow quadratically, and
# a 40-table ETL query says little about which two tables belong together).
MAX_TABLES_FOR_PAIRS = 20
_DEPRECATED = re.compile(r"deprecated|do not use|don't use|obsolete|废弃|弃用|停用|不再使用", re.IGNORECASE)
_DAY = pd.Timedelta(days=1)


def pair_id(a: str, b: str) -> str:
    """Key of an unordered table pair: the two asset ids sorted and joined by '|'."""
    first, second = sorted((a, b))
    return f"{first}{PAIR_SEP}{second}"


def _arrow_schema(names: list[str], key: str) -> pa.Schema:
    fields = [(key, pa.string()), (EVENT_TS, T.TS), (CREATED_TS, T.TS)]
    fields += [(n, pa.int64() if n in INT_FEATURES else pa.float32()) for n in names]
    return pa.schema(fields)


ASSET_SCHEMA = _arrow_schema(ASSET_FEATURES, ASSET_KEY)
PAIR_SCHEMA = _arrow_schema(PAIR_FEATURES, PAIR_KEY)


@dataclass
class FeatureInputs:
    """The lake tables features are computed from, read at pinned versions (recorded with the output)."""

    assets: (
        pd.DataFrame
    )  # asset_id, business, column_count, comment_coverage, updated_at, deleted_at, flagged
    uses: pd.DataFrame  # one row per (query, table read): query_id, ts, user, business, asset_id
    feedback: pd.DataFrame  # one row per (answer, table): ts, asset_id, used (bool)
    versions: dict[str, int | None] = field(default_factory=dict)

    @property
    def latest_event(self) -> pd.Timestamp | None:
        stamps = [s for s in (self.uses["ts"].max(), self.feedback["ts"].max()) if pd.notna(s)]
        return max(stamps) if stamps else None

    @property
    def earliest_event(self) -> pd.Timestamp | None:
        stamps = [s for s in (self.uses["ts"].min(), self.feedback["ts"].min()) if pd.notna(s)]
        return min(stamps) if stamps else None


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True)


def asset_frame(assets: pa.Table) -> pd.DataFrame:
    """Per-table metadata facts from rows of the `assets` table (schema `tables.SCHEMAS['assets']`)."""
    rows = []
    for r in assets.to_pylist():
        columns = r.get("columns") or []
        commented = sum(1 for c in columns if (c.get("comment") or "").strip())
        props = r.get("properties") or ""
        try:
            prop_map = json.loads(props) if props else {}
        except json.JSONDecodeError:
            prop_map = {}
        marked = str(prop_map.get("deprecated", "")).lower() in ("1", "true", "yes")
        text = " ".join([r.get("comment") or "", *(str(v) for v in prop_map.values())])
        rows.append(
            {
                ASSET_KEY: r["asset_id"],
                "business": r.get("business") or "",
                "column_count": len(columns),
                "comment_coverage": commented / len(columns) if columns else 0.0,
                "updated_at": r.get("updated_at"),
                "deleted_at": (r.get("deleted_at") or r.get("updated_at")) if r.get("deleted") else None,
                "flagged": marked or bool(_DEPRECATED.search(text)),
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            ASSET_KEY,
            "business",
            "column_count",
            "comment_coverage",
            "updated_at",
            "deleted_at",
            "flagged",
        ],
    )
    frame["updated_at"] = _utc(frame["updated_at"])
    frame["deleted_at"] = _utc(frame["deleted_at"])
    return frame


def uses_frame(query_log: pa.Table) -> pd.DataFrame:
    """One row per (query, table it read); a table listed twice in one query counts once."""
    rows = [
        (q["query_id"], q["ts"], q.get("user") or "", q.get("business") or "", table)
        for q in query_log.to_pylist()
        for table in set(q.get("tables") or [])
    ]
    frame = pd.DataFrame(rows, columns=["query_id", "ts", "user", "business", ASSET_KEY])
    frame["ts"] = _utc(frame["ts"])
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def feedback_frame(
    feedback: pa.Table, owner: Mapping[str, str] | None = None, shared: Collection[str] = ()
) -> pd.DataFrame:
    """One row per (served answer, returned table), with whether the caller used it.

    Only feedback the match API would accept counts: one row per request id (the first), and only
    tables of the answer's own business or of a `shared` library (`owner`: asset id -> business;
    None skips that check). Rows from before the API checked feedback, or written by anything else,
    cannot move another business's features.
    """
    rows = []
    seen: set[str] = set()
    for f in feedback.to_pylist():
        request_id = f.get("request_id") or ""
        if request_id:
            if request_id in seen:
                continue
            seen.add(request_id)
        allowed = {f.get("business") or "", *shared}

        def visible(table: str, allowed: set[str] = allowed) -> bool:
            return owner is None or owner.get(table) in allowed

        used = {t for t in f.get("used_assets") or [] if visible(t)}
        for table in {t for t in f.get("returned_assets") or [] if visible(t)} | used:
            rows.append((f["ts"], table, table in used))
    frame = pd.DataFrame(rows, columns=["ts", ASSET_KEY, "used"])
    frame["ts"] = _utc(frame["ts"])
    frame["used"] = frame["used"].astype(bool)
    return frame


def load_inputs(
    lake: Lake, versions: dict[str, int | None] | None = None, shared: Collection[str] = ()
) -> FeatureInputs:
    """Read assets, query_log and feedback at pinned versions (the current ones if not given).

    `shared`: the shared libraries' business names, whose tables feedback of any business may name."""
    pinned = versions or {name: lake.version(name) for name in (T.ASSETS, T.QUERY_LOG, T.FEEDBACK)}
    assets = asset_frame(lake.read_arrow(T.ASSETS, pinned.get(T.ASSETS)))
    owner = dict(zip(assets[ASSET_KEY], assets["business"], strict=True))
    return FeatureInputs(
        assets=assets,
        uses=uses_frame(lake.read_arrow(T.QUERY_LOG, pinned.get(T.QUERY_LOG))),
        feedback=feedback_frame(lake.read_arrow(T.FEEDBACK, pinned.get(T.FEEDBACK)), owner, shared),
        versions=dict(pinned),
    )


def _window(frame: pd.DataFrame, at: pd.Timestamp, days: int) -> pd.DataFrame:
    return frame[(frame["ts"] >= at - pd.Timedelta(days=days)) & (frame["ts"] < at)]


def _count(frame: pd.DataFrame, key: str = ASSET_KEY) -> pd.Series:
    return frame.groupby(key).size()


def asset_features_at(inputs: FeatureInputs, at: pd.Timestamp) -> pd.DataFrame:
    """The snapshot at `at`: one row per table known to the lake, from events strictly before `at`."""
    assets = inputs.assets
    out = pd.DataFrame({ASSET_KEY: assets[ASSET_KEY].to_numpy()})
    ids = assets[ASSET_KEY]
    uses90 = _window(inputs.uses, at, 90)
    uses30 = uses90[uses90["ts"] >= at - pd.Timedelta(days=30)]
    uses7 = uses30[uses30["ts"] >= at - pd.Timedelta(days=7)]
    for name, frame in (("queries_7d", uses7), ("queries_30d", uses30), ("queries_90d", uses90)):
        out[name] = ids.map(_count(frame)).fillna(0).astype("int64").to_numpy()
    out["users_30d"] = (
        ids.map(uses30.groupby(ASSET_KEY)["user"].nunique()).fillna(0).astype("int64").to_numpy()
    )

    before = inputs.uses[inputs.uses["ts"] < at]
    last_use = ids.map(before.groupby(ASSET_KEY)["ts"].max())
    days = (at - _utc(last_use)).dt.total_seconds() / 86_400.0
    out["days_since_last_use"] = days.clip(upper=NEVER_USED_DAYS).fillna(NEVER_USED_DAYS).to_numpy()

    business_total = uses30.groupby("business")["query_id"].nunique()
    totals = assets["business"].map(business_total).fillna(0).to_numpy()
    out["business_query_share"] = np.divide(
        out["queries_30d"].to_numpy(dtype=float), totals, out=np.zeros(len(out)), where=totals > 0
    )

    fb90 = _window(inputs.feedback, at, 90)
    fb30 = fb90[fb90["ts"] >= at - pd.Timedelta(days=30)]
    out["feedback_used_30d"] = ids.map(_count(fb30[fb30["used"]])).fillna(0).astype("int64").to_numpy()
    returned = ids.map(_count(fb90)).fillna(0).to_numpy()
    used = ids.map(_count(fb90[fb90["used"]])).fillna(0).to_numpy()
    out["feedback_use_rate"] = np.divide(used, returned, out=np.zeros(len(out)), where=returned > 0)

    out["column_count"] = assets["column_count"].astype("int64").to_numpy()
    out["comment_coverage"] = assets["comment_coverage"].astype(float).to_numpy()
    age = (at - assets["updated_at"]).dt.total_seconds() / 86_400.0
    out["metadata_age_days"] = age.clip(lower=0).fillna(0).to_numpy()
    deleted = assets["deleted_at"].notna() & (assets["deleted_at"] <= at)
    out["deprecated"] = (deleted | assets["flagged"]).astype("int64").to_numpy()
    out[EVENT_TS] = at
    return out


def pair_uses(uses: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, unordered table pair it read together); queries over many tables skipped."""
    rows = []
    for (query_id, ts), group in uses.groupby(["query_id", "ts"], sort=False):
        tables = sorted(set(group[ASSET_KEY]))
        if len(tables) < 2 or len(tables) > MAX_TABLES_FOR_PAIRS:
            continue
        for i, a in enumerate(tables):
            for b in tables[i + 1 :]:
                rows.append((query_id, ts, f"{a}{PAIR_SEP}{b}"))
    frame = pd.DataFrame(rows, columns=["query_id", "ts", PAIR_KEY])
    frame["ts"] = _utc(frame["ts"])
    return frame


def pair_features_at(pairs: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """Co-usage snapshot at `at`: pairs queried together in the 90 days before `at` (others are 0)."""
    win90 = _window(pairs, at, 90)
    c90 = _count(win90, PAIR_KEY)
    c30 = _count(win90[win90["ts"] >= at - pd.Timedelta(days=30)], PAIR_KEY)
    out = pd.DataFrame({PAIR_KEY: c90.index.to_numpy(), "co_queries_90d": c90.to_numpy()})
    out["co_queries_30d"] = out[PAIR_KEY].map(c30).fillna(0).astype("int64").to_numpy()
    out[EVENT_TS] = at
    return out


def snapshot_times(start: datetime, end: datetime) -> list[pd.Timestamp]:
    """Every midnight UTC in (start, end]: the days whose snapshots are due."""
    first = pd.Timestamp(start).tz_convert(UTC).floor("D") + _DAY
    last = pd.Timestamp(end).tz_convert(UTC).floor("D")
    if first > last:
        return []
    return list(pd.date_range(first, last, freq="D"))


def default_window(inputs: FeatureInputs, now: datetime, history_days: int) -> tuple[datetime, datetime]:
    """From the day before the first event (at most `history_days` back) to `now`."""
    end = pd.Timestamp(now).tz_convert(UTC)
    earliest = inputs.earliest_event
    if earliest is None:  # no events at all: one snapshot (metadata only)
        return (end.floor("D") - _DAY).to_pydatetime(), end.to_pydatetime()
    start = max(end - pd.Timedelta(days=history_days), earliest.floor("D") - _DAY)
    return start.to_pydatetime(), end.to_pydatetime()


def iter_snapshots(
    inputs: FeatureInputs, times: list[pd.Timestamp]
) -> Iterator[tuple[pd.Timestamp, pd.DataFrame, pd.DataFrame]]:
    """(T, asset snapshot, pair snapshot) for each T; pairs are exploded once for all T."""
    pairs = pair_uses(inputs.uses)
    for at in times:
        yield at, asset_features_at(inputs, at), pair_features_at(pairs, at)


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema, created: datetime) -> pa.Table:
    frame = frame.copy()
    frame[CREATED_TS] = pd.Timestamp(created)
    for name in schema.names:
        if name not in frame:
            frame[name] = DEFAULTS.get(name, 0)
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


@dataclass
class FeatureWrite:
    """What one feature build wrote, and from which lake versions (recorded in the Delta commit too)."""

    lake_versions: dict[str, int | None]
    snapshots: list[str] = field(default_factory=list)  # ISO dates of the snapshot days written
    asset_rows: int = 0
    pair_rows: int = 0
    asset_table_version: int | None = None
    pair_table_version: int | None = None
    full: bool = False

    @property
    def first_snapshot(self) -> datetime | None:
        return datetime.fromisoformat(self.snapshots[0]) if self.snapshots else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lake_versions": self.lake_versions,
            "snapshots": len(self.snapshots),
            "first_snapshot": self.snapshots[0] if self.snapshots else None,
            "last_snapshot": self.snapshots[-1] if self.snapshots else None,
            "asset_rows": self.asset_rows,
            "pair_rows": self.pair_rows,
            "asset_table_version": self.asset_table_version,
            "pair_table_version": self.pair_table_version,
            "full": self.full,
        }


class FeatureTables:
    """The two offline feature tables (Delta) under the lake folder."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.asset_path = f"{lake.uri}/{ASSET_FEATURES_PATH}"
        self.pair_path = f"{lake.uri}/{PAIR_FEATURES_PATH}"

    def _table(self, path: str) -> DeltaTable | None:
        try:
            return DeltaTable(path, storage_options=self.lake.storage_options)
        except TableNotFoundError:
            return None

    def path(self, relative: str) -> str:
        """The table at `relative` under the lake folder (a feature source's path, as Feast resolves it)."""
        return f"{self.lake.uri}/{relative}"

    def rows(self, path: str) -> int:
        """Rows in the current version of the table at `path` (0 when there is no table). A build that
        computed no rows (no co-usage without a query log) still commits, leaving a table without a data
        file: Feast's file offline store reads the folder's parquet files and fails on it."""
        dt = self._table(path)
        if dt is None:
            return 0
        counts = pa.table(dt.get_add_actions(flatten=True)).column("num_records")
        return int(pc.sum(counts).as_py() or 0)

    def last_snapshot(self) -> pd.Timestamp | None:
        """The latest snapshot day already written (None before the first build)."""
        dt = self._table(self.asset_path)
        if dt is None:
            return None
        stamps = read_delta(dt, [EVENT_TS])[EVENT_TS]
        if len(stamps) == 0:
            return None
        return pd.Timestamp(pc.max(stamps).as_py())

    def read_assets(self) -> pd.DataFrame:
        dt = self._table(self.asset_path)
        return ASSET_SCHEMA.empty_table().to_pandas() if dt is None else read_delta(dt).to_pandas()

    def read_pairs(self) -> pd.DataFrame:
        dt = self._table(self.pair_path)
        return PAIR_SCHEMA.empty_table().to_pandas() if dt is None else read_delta(dt).to_pandas()

    def version(self, path: str) -> int | None:
        dt = self._table(path)
        return None if dt is None else dt.version()


def build_features(
    lake: Lake,
    *,
    full: bool = False,
    now: datetime | None = None,
    history_days: int = 365,
    versions: dict[str, int | None] | None = None,
    progress: Any = None,
    shared: Collection[str] = (),
) -> FeatureWrite:
    """Compute the due daily snapshots from the lake and write them to the offline feature tables.

    Incremental by default: only days after the last snapshot already written. `full=True` recomputes
    every day in the window and replaces both tables (one overwrite commit each). Each commit carries the
    pinned lake versions in its metadata. `progress(done, total)` is called after each snapshot day.
    `shared` names the shared libraries (feedback may name their tables; see `feedback_frame`).
    """
    now = now or datetime.now(UTC)
    inputs = load_inputs(lake, versions, shared)
    tables = FeatureTables(lake)
    start, end = default_window(inputs, now, history_days)
    last = None if full else tables.last_snapshot()
    if last is not None:
        start = max(pd.Timestamp(start), last).to_pydatetime()
    times = snapshot_times(start, end)
    result = FeatureWrite(lake_versions=inputs.versions, snapshots=[t.isoformat() for t in times], full=full)
    if not times:
        result.asset_table_version = tables.version(tables.asset_path)
        result.pair_table_version = tables.version(tables.pair_path)
        return result

    created = datetime.now(UTC)
    asset_parts: list[pa.Table] = []
    pair_parts: list[pa.Table] = []
    for i, (_, assets, pairs) in enumerate(iter_snapshots(inputs, times), start=1):
        asset_parts.append(_to_arrow(assets, ASSET_SCHEMA, created))
        pair_parts.append(_to_arrow(pairs, PAIR_SCHEMA, created))
        if progress is not None:
            progress(i, len(times))
    asset_table = pa.concat_tables(asset_parts)
    pair_table = pa.concat_tables(pair_parts)
    result.asset_rows, result.pair_rows = asset_table.num_rows, pair_table.num_rows

    meta = CommitProperties(
        custom_metadata={
            "assetmatch.operation": "build_features_full" if full else "build_features",
            "assetmatch.lake_versions": json.dumps(inputs.versions, sort_keys=True),
        }
    )
    for path, data in ((tables.asset_path, asset_table), (tables.pair_path, pair_table)):
        if full:
            write_deltalake(
                path,
                data,
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=lake.storage_options,
                commit_properties=meta,
            )
        else:
            write_deltalake(
                path, data, mode="append", storage_options=lake.storage_options, commit_properties=meta
            )
    result.asset_table_version = tables.version(tables.asset_path)
    result.pair_table_version = tables.version(tables.pair_path)
    return result
