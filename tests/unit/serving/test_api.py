"""API contract of a running app (coarse ranking only: no adapters) over a tiny real deployment."""

from __future__ import annotations

from typing import Any

import pytest

from assetmatch.serving.synthetic import synthetic_requirements

GA = {"X-API-Key": "key-ga"}
ALL = {"X-API-Key": "key-all"}


def match(client: Any, key: dict[str, str] | None = GA, **body: Any) -> Any:
    payload = {"business": "ga", "requirement": "daily revenue of user per channel", "k": 5, **body}
    return client.post("/v1/match", json=payload, headers=key or {})


def test_match_answers_ranked_tables_and_versions(client: Any) -> None:
    response = match(client, explain=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["request_id"]) == 32 and body["arm"] == "champion" and body["cached"] is False
    assert len(body["tables"]) >= 1 and [t["rank"] for t in body["tables"]] == list(
        range(1, len(body["tables"]) + 1)
    )
    assert body["index_version"] and body["selected"]
    assert set(body["selected"]) <= {t["asset_id"] for t in body["tables"]}
    assert all(t["reasons"] and t["path_scores"] for t in body["tables"])
    assert "recall" in body["timings_ms"]
    plain = match(client, requirement="weekly coupon refund amount").json()
    assert all(t["reasons"] is None for t in plain["tables"])


def test_auth_401_and_403(client: Any) -> None:
    missing = match(client, key=None)
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "ApiKey"
    assert match(client, key={"X-API-Key": "wrong"}).status_code == 401
    assert match(client, key={"Authorization": "Bearer key-ga"}).status_code == 200
    forbidden = match(client, business="gb")
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
    assert match(client, key=ALL, business="nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"requirement": "x" * 201}, "requirement"),  # configured limit (200)
        ({"requirement": "x" * 20_001}, "requirement"),  # hard limit
        ({"requirement": "   "}, "requirement"),
        ({"k": 21}, "k"),  # configured max_k (20)
        ({"k": 0}, "k"),
        ({"business": "../etc"}, "business"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_a_clear_422(client: Any, body: dict[str, Any], field: str) -> None:
    response = match(client, **body)
    if len(response.request.content) > 4096:
        assert response.status_code == 413  # the body limit answers first
        return
    assert response.status_code == 422, response.text
    data = response.json()
    assert data["error"] == "invalid"
    assert any(field in [str(p) for p in err["loc"]] for err in data["detail"])
    assert all("input" not in err for err in data["detail"])  # the requirement is never echoed back


def test_body_limit_413_by_length_and_by_stream(client: Any) -> None:
    big = b'{"business": "ga", "requirement": "' + b"x" * 5000 + b'"}'
    response = client.post("/v1/match", content=big, headers={**GA, "content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "too_large"

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 1000

    streamed = client.post("/v1/match", content=chunks(), headers={**GA, "content-type": "application/json"})
    assert streamed.status_code == 413


def test_malformed_json_is_422_without_a_trace(client: Any) -> None:
    response = client.post(
        "/v1/match", content=b"{not json", headers={**GA, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "Traceback" not in response.text and "File " not in response.text


def test_no_answer_ever_contains_another_business_asset(client: Any, deployment: Any) -> None:
    """Both businesses share one vocabulary, so only isolation keeps gb's tables out of ga's answers."""
    from assetmatch.recall.index import IndexSet

    index = IndexSet.load_latest(deployment.recall.index_root)
    owner = {asset_id: asset.business for asset_id, asset in index.assets.items()}
    assert {"ga", "gb", "common"} <= set(owner.values())
    seen_business = set()
    for business, key in (("ga", GA), ("gb", {"X-API-Key": "key-gb"})):
        for text in synthetic_requirements(15, seed=len(business)):
            body = match(client, key=key, business=business, requirement=text, k=20).json()
            tables = {t["asset_id"] for t in body["tables"]} | set(body["selected"])
            assert tables, text
            owners = {owner[a] for a in tables}
            assert owners <= {business, "common"}, (business, text, owners)
            seen_business |= owners
    assert "common" in seen_business  # the shared library is visible to everyone


def test_cache_hit_and_rate_in_metrics(client: Any) -> None:
    text = "Monthly ad conversion by region"
    first = match(client, requirement=text).json()
    second = match(client, requirement="  monthly AD conversion by region ").json()
    assert not first["cached"] and second["cached"]
    assert second["request_id"] != first["request_id"]
    assert second["tables"] == first["tables"]
    metrics = client.get("/metrics").text
    assert 'assetmatch_cache_requests_total{result="hit"}' in metrics
    assert "assetmatch_cache_hit_ratio" in metrics
    assert 'assetmatch_stage_seconds_count{business="ga",model_version=' in metrics
    assert "assetmatch_request_seconds_bucket" in metrics


def test_businesses_lists_only_what_the_key_covers(client: Any) -> None:
    assert [b["name"] for b in client.get("/v1/businesses", headers=GA).json()] == ["ga"]
    assert {b["name"] for b in client.get("/v1/businesses", headers=ALL).json()} == {"ga", "gb"}
    assert client.get("/v1/businesses").status_code == 401


def test_health_readiness_and_openapi(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["reload_error"] is None
    spec = client.get("/openapi.json").json()
    assert {"/v1/match", "/v1/feedback", "/v1/businesses"} <= set(spec["paths"])
    assert "401" in spec["paths"]["/v1/match"]["post"]["responses"]


def test_feedback_needs_a_known_request_of_a_covered_business(client: Any) -> None:
    request_id = match(client).json()["request_id"]
    ok = client.post("/v1/feedback", json={"request_id": request_id, "used_assets": []}, headers=GA)
    assert ok.status_code == 200 and ok.json()["accepted"]
    other_tenant = client.post(
        "/v1/feedback", json={"request_id": request_id, "used_assets": []}, headers={"X-API-Key": "key-gb"}
    )
    assert other_tenant.status_code == 403 and other_tenant.json()["error"] == "forbidden"
    unknown = client.post("/v1/feedback", json={"request_id": "0" * 32, "used_assets": []}, headers=GA)
    assert unknown.status_code == 404
    bad = client.post("/v1/feedback", json={"request_id": "short", "used_assets": []}, headers=GA)
    assert bad.status_code == 422


def test_a_scope_answers_with_its_databases_tables_only(client: Any, deployment: Any) -> None:
    """ga sees its own database (ga_dw) and the shared library's (common_dw); a scope keeps one."""
    from assetmatch.recall.index import IndexSet

    index = IndexSet.load_latest(deployment.recall.index_root)
    database = {asset_id: asset.database for asset_id, asset in index.assets.items()}
    text = "daily revenue of user per channel, scoped"
    whole = match(client, requirement=text, k=20).json()
    assert {database[t["asset_id"]] for t in whole["tables"]} == {"ga_dw", "common_dw"}
    for scope in (["ga_dw"], ["common_dw"], [" common_dw", "ga_dw"]):
        response = match(client, requirement=text, k=20, databases=scope)
        assert response.status_code == 200, response.text
        body = response.json()
        assert not body["cached"]  # an unscoped answer (or another scope's) is never served for it
        tables = {t["asset_id"] for t in body["tables"]} | set(body["selected"])
        assert tables and {database[a] for a in tables} == {s.strip() for s in scope}, scope
    again = match(client, requirement=text, k=20, databases=["ga_dw", "common_dw"]).json()
    assert again["cached"]  # the same scope in another order is the same question


@pytest.mark.parametrize(
    ("databases", "message"),
    [
        (["gb_dw"], "gb_dw"),  # gb's database: ga may not see it
        (["nowhere"], "nowhere"),
        ([], "at least 1"),
        (["x\x00y"], "control characters"),
    ],
)
def test_a_scope_naming_no_visible_table_is_a_clear_422(
    client: Any, databases: list[str], message: str
) -> None:
    response = match(client, databases=databases)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any("databases" in [str(p) for p in err["loc"]] and message in err["msg"] for err in detail), (
        detail
    )
