"""A hand-built lake whose feature values are known exactly (shared by unit and integration tests).

R is a midnight UTC two days before today. Queries (business g unless said):
  q1 R-23h user a [orders, users]     q2 R-2d  user b [orders]      q3 R-10d user a [orders, users]
  q4 R-40d user c [users]             q5 R-100d user a [orders]     q6 R-3d  user d, business h [h.x]
  q7 R+1h  user e [orders]            (after the snapshot at R, inside the one at R+1d)
Feedback: R-5d returned [orders, users], used [orders]; R-1d returned [orders], used [].
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import Column, QueryLogEntry, TableAsset

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
R = TODAY - timedelta(days=2)
H = timedelta(hours=1)
D = timedelta(days=1)

ORDERS, USERS, OLD, GONE, HX = "g.orders", "g.users", "g.old_orders", "g.gone", "h.x"

QUERIES = [
    ("q1", R - 23 * H, "a", "g", [ORDERS, USERS]),
    ("q2", R - 2 * D, "b", "g", [ORDERS]),
    ("q3", R - 10 * D, "a", "g", [ORDERS, USERS, USERS]),  # a table listed twice counts once
    ("q4", R - 40 * D, "c", "g", [USERS]),
    ("q5", R - 100 * D, "a", "g", [ORDERS]),
    ("q6", R - 3 * D, "d", "h", [HX]),
    ("q7", R + H, "e", "g", [ORDERS]),
]


def assets() -> list[TableAsset]:
    return [
        TableAsset(
            business="g",
            name="orders",
            columns=[
                Column(name="id", comment="order id"),
                Column(name="amount", comment="金额"),
                Column(name="x"),
            ],
        ),
        TableAsset(business="g", name="users", columns=[Column(name="id"), Column(name="name")]),
        TableAsset(
            business="g",
            name="old_orders",
            comment="Deprecated: use orders",
            columns=[Column(name="id", comment="k")],
        ),
        TableAsset(business="g", name="gone", source="snap", columns=[Column(name="id")]),
        TableAsset(business="h", name="x", columns=[]),
    ]


def build_lake(uri: str) -> Lake:
    """Write the hand-built lake: assets (g.gone soft-deleted at R-5d), query_log, feedback."""
    lake = Lake(uri)
    lake.merge_assets(assets(), run_id="r1", now=R - 60 * D)
    lake.merge_assets([], run_id="r2", snapshot_of="snap", now=R - 5 * D)  # soft-deletes g.gone
    rows = [
        {
            **QueryLogEntry(query_id=q, ts=ts, user=u, business=b, sql="select 1", tables=t).model_dump(),
            "run_id": "r1",
        }
        for q, ts, u, b, t in QUERIES
    ]
    lake.upsert(T.QUERY_LOG, rows, "r1")
    feedback = [
        {"request_id": "f1", "business": "g", "requirement": "orders", "returned_assets": [ORDERS, USERS],
         "used_assets": [ORDERS], "arm": "champion", "model_version": "1", "ts": R - 5 * D},
        {"request_id": "f2", "business": "g", "requirement": "orders", "returned_assets": [ORDERS],
         "used_assets": [], "arm": "champion", "model_version": "1", "ts": R - D},
    ]  # fmt: skip
    lake.append(T.FEEDBACK, feedback, "r1")
    return lake


# Exact feature values of the snapshot at R (events strictly before R).
EXPECTED_AT_R = {
    ORDERS: {
        "queries_7d": 2,
        "queries_30d": 3,
        "queries_90d": 3,
        "users_30d": 2,
        "days_since_last_use": 23 / 24,
        "business_query_share": 1.0,
        "feedback_used_30d": 1,
        "feedback_use_rate": 0.5,
        "column_count": 3,
        "comment_coverage": 2 / 3,
        "deprecated": 0,
    },
    USERS: {
        "queries_7d": 1,
        "queries_30d": 2,
        "queries_90d": 3,
        "users_30d": 1,
        "days_since_last_use": 23 / 24,
        "business_query_share": 2 / 3,
        "feedback_used_30d": 0,
        "feedback_use_rate": 0.0,
        "column_count": 2,
        "comment_coverage": 0.0,
        "deprecated": 0,
    },
    OLD: {"queries_90d": 0, "days_since_last_use": 365.0, "deprecated": 1, "comment_coverage": 1.0},
    GONE: {"deprecated": 1, "column_count": 1},
    HX: {"queries_30d": 1, "business_query_share": 1.0, "column_count": 0, "comment_coverage": 0.0},
}
