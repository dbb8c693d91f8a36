"""Fixtures of the recall tests: the MiniLM encoder once per session, a tiny two-business lake."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import Settings
from assetmatch.lake import Lake
from assetmatch.lake.delta import utcnow
from assetmatch.models import Column, ForeignKey, TableAsset


@pytest.fixture(scope="session")
def encoder() -> Any:
    """The packaged MiniLM, loaded once; recall's own per-process cache then hands out the same object."""
    from assetmatch.recall.encoder import EncoderSpec, load_encoder

    return load_encoder(EncoderSpec())


def game_assets() -> list[TableAsset]:
    """Business `game`: a small warehouse with Chinese comments; business `music`: an English schema."""
    return [
        TableAsset(
            business="game",
            name="dws_user_active_1d",
            comment="日活跃用户汇总",
            columns=[
                Column(name="user_id", comment="用户ID"),
                Column(name="active_days", comment="活跃天数"),
            ],
            foreign_keys=[ForeignKey(columns=["user_id"], ref_asset_id="game.dim_user")],
        ),
        TableAsset(
            business="game",
            name="dwd_pay_order_di",
            comment="payment orders",
            columns=[
                Column(name="order_id"),
                Column(name="user_id"),
                Column(name="pay_amount", comment="支付金额"),
            ],
            foreign_keys=[ForeignKey(columns=["user_id"], ref_asset_id="game.dim_user")],
        ),
        TableAsset(
            business="game",
            name="dim_user",
            comment="user dimension",
            columns=[Column(name="user_id"), Column(name="register_channel", comment="注册渠道")],
        ),
        TableAsset(
            business="game",
            name="dim_item",
            comment="game items",
            columns=[Column(name="item_id"), Column(name="item_name")],
        ),
        TableAsset(
            business="game",
            name="dwd_item_purchase_di",
            comment="item purchases",
            columns=[Column(name="user_id"), Column(name="item_id"), Column(name="price")],
        ),
        TableAsset(
            business="music",
            name="singer",
            comment="singer",
            columns=[
                Column(name="Singer_ID"),
                Column(name="Name"),
                Column(name="Country"),
                Column(name="Age"),
            ],
        ),
        TableAsset(
            business="music",
            name="concert",
            comment="concert",
            columns=[Column(name="concert_ID"), Column(name="concert_Name"), Column(name="Year")],
        ),
        TableAsset(
            business="music",
            name="singer_in_concert",
            comment="singer in concert",
            columns=[Column(name="concert_ID"), Column(name="Singer_ID")],
            foreign_keys=[
                ForeignKey(columns=["concert_ID"], ref_asset_id="music.concert"),
                ForeignKey(columns=["Singer_ID"], ref_asset_id="music.singer"),
            ],
        ),
    ]


def fill_lake(lake: Lake) -> None:
    """Assets, a glossary, a query log and labelled requirements of every split."""
    lake.merge_assets(game_assets(), run_id="fixture")
    lake.upsert(
        "glossary",
        [
            {
                "business": "game",
                "term": "普通活跃",
                "synonyms": ["normal active", "常规活跃"],
                "description": "",
                "assets": ["game.dws_user_active_1d"],
                "source": "fixture",
                "run_id": "fixture",
            },
            {
                "business": "game",
                "term": "A渠道",
                "synonyms": ["channel A"],
                "description": "",
                "assets": ["game.dim_user"],
                "source": "fixture",
                "run_id": "fixture",
            },
            {
                "business": "music",
                "term": "巡演",
                "synonyms": ["tour"],
                "description": "",
                "assets": ["music.concert"],
                "source": "fixture",
                "run_id": "fixture",
            },
        ],
        run_id="fixture",
    )
    lake.upsert(
        "query_log",
        [
            {
                "query_id": "q1",
                "ts": utcnow(),
                "user": "ana",
                "business": "game",
                "sql": "select ...",
                "requirement": "top spenders on virtual goods last week",
                "tables": ["game.dwd_item_purchase_di", "game.dim_item"],
                "source": "fixture",
                "run_id": "fixture",
            },
            {  # a paraphrase of the train requirement below: the same query answered it
                "query_id": "q2",
                "ts": utcnow(),
                "user": "bo",
                "business": "game",
                "sql": "SELECT user_id, SUM(amount) FROM dwd_pay_order_di GROUP BY user_id",
                "requirement": "who recharged the most",
                "tables": ["game.dwd_pay_order_di"],
                "source": "fixture",
                "run_id": "fixture",
            },
        ],
        run_id="fixture",
    )
    lake.upsert(
        "requirements",
        [
            _requirement(
                "r-train",
                "game",
                "whales by total recharge",
                ["game.dwd_pay_order_di"],
                "train",
                sql="select user_id, sum(amount)\n  from dwd_pay_order_di group by user_id",
            ),
            _requirement("r-dev", "game", "secret dev request about leaderboards", ["game.dim_item"], "dev"),
            _requirement(
                "r-test", "game", "secret test request about leaderboards", ["game.dim_item"], "test"
            ),
        ],
        run_id="fixture",
    )


def _requirement(
    rid: str, business: str, text: str, gold: list[str], split: str, sql: str | None = None
) -> dict[str, Any]:
    return {
        "id": rid,
        "business": business,
        "text": text,
        "gold_assets": gold,
        "split": split,
        "ts": utcnow(),
        "sql": sql,
        "source": "fixture",
        "run_id": "fixture",
    }


@pytest.fixture
def lake_filler() -> Callable[[Lake], None]:
    """`fill_lake` as a fixture, for tests that build their own lake."""
    return fill_lake


def edit_one_table(lake: Lake) -> None:
    """Change one table of business `music` in place (its comment and columns)."""
    changed = TableAsset(
        business="music",
        name="concert",
        comment="concerts and their tours",
        columns=[Column(name="concert_ID"), Column(name="concert_Name"), Column(name="Year")],
    )
    lake.merge_assets([changed], run_id="edit")


@pytest.fixture
def table_editor() -> Callable[[Lake], None]:
    """`edit_one_table` as a fixture: the shard tests' one change confined to one business."""
    return edit_one_table


def shard_files(index: Any, path: str, business: str) -> dict[str, os.stat_result]:
    """The files of `business`'s shard of `path` (dense | lexical) with their inodes: a reused shard
    is hard-linked, so its files keep the inode of the previous build's."""
    folder = index.folder / path / "shards" / index.manifest[f"{path}_shards"][business]["folder"]
    return {p.name: p.stat() for p in folder.iterdir()}


@pytest.fixture
def shard_stats() -> Callable[[Any, str, str], dict[str, os.stat_result]]:
    return shard_files


def filled(root: Path, **recall: Any) -> tuple[Lake, Settings]:
    """A lake under `root` filled with the fixture library, and settings with `recall` overrides."""
    settings = Settings(
        lake={"uri": str(root / "lake")}, recall={"index_root": str(root / "indexes"), **recall}
    )
    lake = Lake.from_settings(settings)
    fill_lake(lake)
    return lake, settings


@pytest.fixture
def filled_lake() -> Callable[..., tuple[Lake, Settings]]:
    """`filled` as a fixture, for tests that build their own lake."""
    return filled


@pytest.fixture
def make_settings() -> Callable[[Path], Settings]:
    def make(root: Path) -> Settings:
        return Settings(lake={"uri": str(root / "lake")}, recall={"index_root": str(root / "indexes")})

    return make


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Any:
    """One index over the fixture lake, shared by the read-only tests of a module."""
    from assetmatch.recall.index import IndexSet

    root = tmp_path_factory.mktemp("recall")
    settings = Settings(lake={"uri": str(root / "lake")}, recall={"index_root": str(root / "indexes")})
    lake = Lake.from_settings(settings)
    fill_lake(lake)
    return IndexSet.build(lake, settings)
