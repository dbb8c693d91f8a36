"""Records: stable ids, content hashes that ignore noise and see real changes."""

from __future__ import annotations

from datetime import UTC, datetime

from assetmatch.models import Column, QueryLogEntry, TableAsset, default_asset_id
from assetmatch.text import has_broken_encoding, normalize_text, same_query_key


def asset(comment: str = "日活跃用户", col_comment: str = "用户ID") -> TableAsset:
    return TableAsset(
        business="moba", database="dw", schema_name="dws", name="dws_user_active_1d", comment=comment,
        columns=[Column(name="uid", type="bigint", comment=col_comment)],
    )  # fmt: skip


def test_default_asset_id_is_lowercase_dot_joined() -> None:
    assert asset().asset_id == "moba.dw.dws.dws_user_active_1d"
    assert default_asset_id("g", "", "", "T") == "g.t"


def test_explicit_asset_id_is_kept() -> None:
    assert TableAsset(
        asset_id="concert_singer.singer", business="concert_singer", name="singer"
    ).asset_id == ("concert_singer.singer")


def test_content_hash_sees_comment_changes_only_after_normalization() -> None:
    base = asset().normalized().content_hash()
    # full-width characters and stray whitespace normalize to the same content
    noisy = asset(comment="  日活跃用户\u200b ", col_comment="用户ＩＤ").normalized().content_hash()
    assert noisy == base
    assert asset(comment="付费用户").normalized().content_hash() != base


def test_content_hash_ignores_the_source_name() -> None:
    a = asset()
    assert a.model_copy(update={"source": "other"}).content_hash() == a.content_hash()


def test_normalize_text() -> None:
    assert normalize_text("Ａ渠道\t\n 用户\x07") == "A渠道 用户"
    assert normalize_text(None) == ""


def test_same_query_key_is_the_sql_over_the_same_tables() -> None:
    key = same_query_key("SELECT count(*)  FROM singer", ["d.singer", "d.concert"])
    assert key == same_query_key("select count(*) from singer", ("d.concert", "d.singer"))  # case, order
    assert key != same_query_key("select count(*) from singer", ["e.singer"])  # another database's namesake
    assert same_query_key(None, ["d.singer"]) == same_query_key("  ", ["d.singer"]) == ""  # unknown SQL


def test_broken_encoding() -> None:
    assert has_broken_encoding("ç”¨æˆ·\ufffd")
    assert has_broken_encoding("Ã©tÃ©")
    assert not has_broken_encoding("été 用户 naïve")


def test_query_id_is_stable() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    one = QueryLogEntry(ts=ts, user="u", business="b", sql="select 1")
    two = QueryLogEntry(ts=ts, user="u", business="b", sql="select 1")
    assert one.query_id == two.query_id and len(one.query_id) == 32


def test_row_count_drift_does_not_change_the_hash() -> None:
    a = asset().model_copy(update={"row_count": 12_345})
    assert a.model_copy(update={"row_count": 12_399}).content_hash() == a.content_hash()
    assert a.model_copy(update={"row_count": 1_234_567}).content_hash() != a.content_hash()
