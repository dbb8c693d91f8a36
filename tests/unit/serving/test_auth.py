from __future__ import annotations

import pytest

from assetmatch.serving.auth import AuthError, KeyStore, hash_key, key_from_headers


def test_keys_are_looked_up_by_sha256_digest() -> None:
    store = KeyStore({hash_key("s3cret"): ["ga", "gb"]})
    principal = store.authenticate("s3cret")
    assert principal.key_hash == hash_key("s3cret") != "s3cret"
    assert principal.may_query("ga") and not principal.may_query("gc")
    assert principal.visible(["gc", "gb", "ga"]) == ["gb", "ga"]


def test_missing_and_unknown_keys_are_401_other_business_403() -> None:
    store = KeyStore({hash_key("k1"): ["ga"]})
    with pytest.raises(AuthError) as missing:
        store.authenticate(None)
    assert missing.value.status == 401
    with pytest.raises(AuthError) as unknown:
        store.authenticate("k2")
    assert unknown.value.status == 401
    with pytest.raises(AuthError) as forbidden:
        store.authorize("k1", "gb")
    assert forbidden.value.status == 403
    assert store.authorize("k1", "ga").may_query("ga")


def test_wildcard_key_and_optional_auth() -> None:
    assert KeyStore({hash_key("admin"): ["*"]}).authorize("admin", "anything").may_query("x")
    assert KeyStore({}, required=False).authenticate(None).may_query("ga")


def test_a_plain_key_in_the_config_is_refused() -> None:
    with pytest.raises(ValueError, match="sha256"):
        KeyStore({"not-a-digest": ["ga"]})


def test_key_from_headers_prefers_x_api_key_then_bearer() -> None:
    assert key_from_headers("a", "Bearer b") == "a"
    assert key_from_headers(None, "Bearer b") == "b"
    assert key_from_headers(None, "Basic xyz") is None
    assert key_from_headers(None, None) is None
