"""POST /v1/feedback accepts only the caller's own request, naming tables its business can see,
within size limits, once per request; everything else is a clear 4xx and never reaches the lake."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.recall.index import IndexSet

GA = {"X-API-Key": "key-ga"}
GB = {"X-API-Key": "key-gb"}


def answer(client: Any, key: dict[str, str] = GA, business: str = "ga", text: str = "") -> dict[str, Any]:
    body = {"business": business, "requirement": text or "daily revenue of user per channel", "k": 5}
    response = client.post("/v1/match", json=body, headers=key)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def give(client: Any, request_id: str, used: list[str], key: dict[str, str] = GA) -> Any:
    return client.post("/v1/feedback", json={"request_id": request_id, "used_assets": used}, headers=key)


def owners(deployment: Any) -> dict[str, str]:
    index = IndexSet.load_latest(deployment.recall.index_root)
    return {asset_id: asset.business for asset_id, asset in index.assets.items()}


def lake_rows(client: Any) -> list[dict[str, Any]]:
    """Flush what the app buffered and read the feedback table back."""
    ctx = client.app.state.ctx
    client.portal.call(ctx.feedback.flush)
    lake: Lake = ctx.lake
    if lake.version(T.FEEDBACK) is None:
        return []
    rows: list[dict[str, Any]] = lake.read_arrow(T.FEEDBACK).to_pylist()
    return rows


def test_another_tenants_request_is_403_and_an_unknown_one_404(client: Any) -> None:
    request_id = answer(client)["request_id"]
    other = give(client, request_id, [], key=GB)
    assert other.status_code == 403 and other.json()["error"] == "forbidden"
    unknown = give(client, "f" * 32, [])
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    assert all(r["request_id"] != request_id for r in lake_rows(client))


def test_another_businesses_assets_or_unknown_ids_are_403(client: Any, deployment: Any) -> None:
    owner = owners(deployment)
    gb_table = next(a for a, b in owner.items() if b == "gb")
    body = answer(client)
    for used in ([gb_table], ["no.such.table"], [body["tables"][0]["asset_id"], gb_table]):
        refused = give(client, body["request_id"], used)
        assert refused.status_code == 403, (used, refused.text)
        assert refused.json()["error"] == "forbidden"
    # refusals claim nothing: valid feedback for the same request is still accepted afterwards
    ok = give(client, body["request_id"], [body["tables"][0]["asset_id"]])
    assert ok.status_code == 200 and ok.json() == {
        "request_id": body["request_id"],
        "accepted": True,
        "duplicate": False,
    }
    stored = [r for r in lake_rows(client) if r["request_id"] == body["request_id"]]
    assert [r["used_assets"] for r in stored] == [[body["tables"][0]["asset_id"]]]


def test_tables_outside_the_answer_of_the_own_business_or_shared_are_accepted(
    client: Any, deployment: Any
) -> None:
    """A table the ranker missed is the most useful feedback: any live table of the business (or of a
    shared library) is accepted, not only the answer's."""
    owner = owners(deployment)
    body = answer(client, text="weekly coupon refund amount")
    shown = {t["asset_id"] for t in body["tables"]}
    missed = next(a for a, b in sorted(owner.items()) if b == "ga" and a not in shown)
    shared = next(a for a, b in sorted(owner.items()) if b == "common" and a not in shown)
    ok = give(client, body["request_id"], [missed, shared, missed])
    assert ok.status_code == 200, ok.text
    stored = [r for r in lake_rows(client) if r["request_id"] == body["request_id"]]
    assert [r["used_assets"] for r in stored] == [[missed, shared]]  # deduplicated, in order
    assert stored[0]["business"] == "ga"


@pytest.mark.parametrize(
    ("used", "why"),
    [
        (["x" * 30_000], "30 KB id"),
        (["ga.t\x00able"], "NUL"),
        (["ga.ta\nble"], "newline"),
        (["ga.ta\u0085ble"], "C1 control"),
        ([""], "empty id"),
        ([f"ga.t{i}" for i in range(201)], "too many ids"),
    ],
)
def test_oversized_or_control_character_ids_are_422(client: Any, used: list[str], why: str) -> None:
    request_id = answer(client)["request_id"]
    response = give(client, request_id, used)
    if len(response.request.content) > 4096:  # the body limit (413) answers before validation
        assert response.status_code == 413, why
    else:
        assert response.status_code == 422, (why, response.text)
        assert response.json()["error"] == "invalid"
        assert all("input" not in e for e in response.json()["detail"])
    assert all(r["request_id"] != request_id for r in lake_rows(client))


def test_the_same_feedback_twice_is_stored_once_and_different_feedback_is_409(client: Any) -> None:
    body = answer(client, text="monthly login count by region")
    first_table = body["tables"][0]["asset_id"]
    results = [give(client, body["request_id"], [first_table]) for _ in range(5)]
    assert [r.status_code for r in results] == [200] * 5
    assert [r.json()["duplicate"] for r in results] == [False, True, True, True, True]
    conflict = give(client, body["request_id"], [])
    assert conflict.status_code == 409 and conflict.json()["error"] == "conflict"
    stored = [r for r in lake_rows(client) if r["request_id"] == body["request_id"]]
    assert len(stored) == 1 and stored[0]["used_assets"] == [first_table]
    metrics = client.get("/metrics").text
    assert 'assetmatch_feedback_rows_total{outcome="duplicate"} 4.0' in metrics
    assert 'assetmatch_feedback_rows_total{outcome="conflict"} 1.0' in metrics


def test_concurrent_duplicates_are_stored_once(client: Any) -> None:
    body = answer(client, text="guild match rank score")
    table = body["tables"][0]["asset_id"]

    async def burst() -> list[int]:
        import httpx

        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            payload = {"request_id": body["request_id"], "used_assets": [table]}
            calls = [http.post("/v1/feedback", json=payload, headers=GA) for _ in range(20)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert client.portal.call(burst) == [200] * 20
    stored = [r for r in lake_rows(client) if r["request_id"] == body["request_id"]]
    assert len(stored) == 1


def test_the_feedback_of_a_scoped_request_records_its_scope(client: Any) -> None:
    """The label a scoped request's feedback becomes is trained on in that scope (`Requirement.databases`)."""
    body = {"business": "ga", "requirement": "daily revenue of user per channel, in ga_dw", "k": 5}
    scoped = client.post("/v1/match", json={**body, "databases": ["ga_dw"]}, headers=GA).json()
    whole = answer(client, text="daily revenue of user per channel, anywhere")
    for response in (scoped, whole):
        assert give(client, response["request_id"], [response["tables"][0]["asset_id"]]).status_code == 200
    stored = {r["request_id"]: r["databases"] for r in lake_rows(client)}
    assert stored[scoped["request_id"]] == ["ga_dw"]
    assert stored[whole["request_id"]] is None
