"""Feedback features count only what the match API would accept: another business's tables, unknown
ids and repeated request ids are ignored, so one tenant cannot move another's ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pandas as pd
from feature_lakedata import EXPECTED_AT_R as _EXPECTED
from feature_lakedata import HX, ORDERS, USERS, D, R, build_lake

from assetmatch.features import build
from assetmatch.lake import tables as T

EXPECTED_AT_R = cast(dict[str, dict[str, Any]], _EXPECTED)


def row(request_id: str, business: str, returned: list[str], used: list[str]) -> dict[str, object]:
    return {"request_id": request_id, "business": business, "requirement": "x", "returned_assets": returned,
            "used_assets": used, "arm": "champion", "model_version": "1", "ts": R - 2 * D}  # fmt: skip


def features_at_r(
    tmp_path: Path, extra: list[dict[str, object]], shared: tuple[str, ...] = ()
) -> pd.DataFrame:
    lake = build_lake(str(tmp_path / "lake"))
    lake.append(T.FEEDBACK, extra, "r2")
    inputs = build.load_inputs(lake, shared=shared)
    return build.asset_features_at(inputs, pd.Timestamp(R)).set_index(build.ASSET_KEY)


def test_cross_tenant_unknown_and_repeated_feedback_change_nothing(tmp_path: Path) -> None:
    hostile = [
        row("e1", "g", [HX], [HX]),  # g's caller names h's table, returned and used
        row("e2", "g", ["no.such"], ["no.such"]),
        row("f1", "g", [ORDERS, USERS], [ORDERS]),  # the same request id again (stored twice before)
        row("e3", "h", [ORDERS], [ORDERS, USERS]),  # h names g's tables
    ]
    frame = features_at_r(tmp_path, hostile)
    assert frame.loc[HX, "feedback_used_30d"] == 0 and frame.loc[HX, "feedback_use_rate"] == 0.0
    for asset_id in (ORDERS, USERS):
        for name in ("feedback_used_30d", "feedback_use_rate"):
            assert frame.loc[asset_id, name] == EXPECTED_AT_R[asset_id][name], (asset_id, name)
    assert "no.such" not in frame.index


def test_own_and_shared_library_tables_count(tmp_path: Path) -> None:
    own = [row("o1", "g", [ORDERS], [ORDERS])]
    frame = features_at_r(tmp_path, own)
    assert frame.loc[ORDERS, "feedback_used_30d"] == EXPECTED_AT_R[ORDERS]["feedback_used_30d"] + 1
    # with h a shared library, g's feedback on h.x counts; without it, it does not
    cross = [row("s1", "g", [HX], [HX])]
    assert features_at_r(tmp_path / "a", cross, shared=("h",)).loc[HX, "feedback_used_30d"] == 1
    assert features_at_r(tmp_path / "b", cross).loc[HX, "feedback_used_30d"] == 0
