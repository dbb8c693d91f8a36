"""Synthetic requirements from comments and the glossary (English and Chinese), and the LLM client."""

from __future__ import annotations

import json

import httpx

from assetmatch.models import Column, GlossaryTerm, TableAsset
from assetmatch.training.augment import LlmClient, from_comments, from_glossary, synthesize


def assets() -> list[TableAsset]:
    return [
        TableAsset(
            business="game",
            name="dws_pay_1d",
            comment="每日充值汇总",
            columns=[Column(name="user_id", primary_key=True), Column(name="pay_amt", comment="充值金额")],
        ),
        TableAsset(
            business="game",
            name="orders",
            comment="customer orders",
            columns=[
                Column(name="order_id", primary_key=True),
                Column(name="amount", comment="order amount"),
            ],
        ),
    ]


def test_templates_follow_the_comment_language_and_are_seeded() -> None:
    out = from_comments(assets(), per_table=4, seed=5)
    assert out == from_comments(assets(), per_table=4, seed=5)
    zh = [r.text for r in out if r.gold == ("game.dws_pay_1d",)]
    en = [r.text for r in out if r.gold == ("game.orders",)]
    assert len(zh) == 4 and all(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in zh)
    assert len(en) == 4 and all(t.isascii() for t in en)
    assert all(r.origin == "synthetic" for r in out)


def test_glossary_terms_and_synonyms_become_requirements() -> None:
    term = GlossaryTerm(
        business="game", term="ARPU", synonyms=["人均付费"], assets=["game.dws_pay_1d", "game.unknown"]
    )
    out = from_glossary([term], {"game.dws_pay_1d"}, seed=1)
    assert [r.gold for r in out] == [("game.dws_pay_1d",), ("game.dws_pay_1d",)]
    assert "ARPU" in out[0].text and "人均付费" in out[1].text
    assert len(synthesize(assets(), [term], per_table=1, seed=1)) == 4


def test_llm_client_request_and_reply_parsing() -> None:
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["auth"] = request.headers.get("authorization")
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200, json={"choices": [{"message": {"content": "1. total order amount\n- orders by day\n\n"}}]}
        )

    client = LlmClient("http://llm.local/v1", "tiny", api_key="k")
    client._http = httpx.Client(
        base_url="http://llm.local/v1",
        transport=httpx.MockTransport(handler),
        headers={"Authorization": "Bearer k"},
    )
    out = client.requirements_for(assets()[1], 2)
    assert [r.text for r in out] == ["total order amount", "orders by day"]
    assert seen["path"] == "/v1/chat/completions" and seen["auth"] == "Bearer k"
    assert seen["body"]["model"] == "tiny"  # type: ignore[index]
