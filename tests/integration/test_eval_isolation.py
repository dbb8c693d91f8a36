"""Business isolation through the Matcher over a real published IndexSet (Delta lake, BM25, MiniLM).

A requirement of one business never gets another business's table; a business declared `shared: true`
is visible to every business.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assetmatch.config import BusinessConfig, LakeConfig, RecallConfig, Settings
from assetmatch.lake.delta import Lake
from assetmatch.matching.matcher import Matcher, UnknownBusinessError
from assetmatch.models import Column, ForeignKey, TableAsset

pytestmark = pytest.mark.integration


def _table(
    business: str, name: str, comment: str, cols: list[str], fks: list[ForeignKey] | None = None
) -> TableAsset:
    return TableAsset(
        business=business,
        database=f"{business}_dw",
        name=name,
        comment=comment,
        columns=[Column(name=c) for c in cols],
        foreign_keys=fks or [],
    )


def _assets() -> list[TableAsset]:
    out = []
    for business in ("game_a", "game_b"):
        out += [
            _table(
                business, "payments", "in-game purchases paid by players", ["payment_id", "user_id", "amount"]
            ),
            _table(business, "users", "registered players", ["user_id", "country", "register_date"]),
            _table(business, "sessions", "login sessions", ["session_id", "user_id", "duration"]),
        ]
    out.append(_table("common", "dim_country", "country names and regions", ["country", "region"]))
    return out


@pytest.fixture(scope="module")
def index_and_settings(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Settings]:
    from assetmatch.recall.index import IndexSet

    root: Path = tmp_path_factory.mktemp("iso")
    settings = Settings(
        lake=LakeConfig(uri=str(root / "lake")),
        recall=RecallConfig(index_root=str(root / "indexes")),
        businesses=[
            BusinessConfig(name="game_a"),
            BusinessConfig(name="game_b"),
            BusinessConfig(name="common", shared=True),
        ],
    )
    lake = Lake.from_settings(settings)
    lake.merge_assets(_assets(), run_id="test")
    return IndexSet.build(lake, settings), settings


@pytest.mark.parametrize("business", ["game_a", "game_b"])
def test_requirement_sees_only_its_business_and_the_shared_library(
    index_and_settings: tuple[object, Settings], business: str
) -> None:
    index, settings = index_and_settings
    matcher = Matcher(index, settings)  # type: ignore[arg-type]
    result = matcher.match(business, "total payment amount per player country", k=20)
    found = {t.business for t in result.ranked}
    assert found <= {business, "common"}
    assert business in found
    assert result.ranked[0].business == business
    assert all(a.startswith(f"{business}.") or a.startswith("common.") for a in result.selected)
    assert any(t.asset_id == "common.common_dw.dim_country" for t in result.ranked)  # shared library honoured


def test_shared_flag_off_hides_the_library(index_and_settings: tuple[object, Settings]) -> None:
    index, settings = index_and_settings
    private = settings.model_copy(
        update={
            "businesses": [
                BusinessConfig(name="game_a"),
                BusinessConfig(name="game_b"),
                BusinessConfig(name="common"),
            ]
        }
    )
    result = Matcher(index, private).match("game_a", "country region of players", k=20)  # type: ignore[arg-type]
    assert {t.business for t in result.ranked} == {"game_a"}


def test_unknown_business_is_refused(index_and_settings: tuple[object, Settings]) -> None:
    index, settings = index_and_settings
    with pytest.raises(UnknownBusinessError, match="game_z"):
        Matcher(index, settings).match("game_z", "payments")  # type: ignore[arg-type]
