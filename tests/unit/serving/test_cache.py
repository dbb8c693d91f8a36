from __future__ import annotations

from assetmatch.serving.cache import LruCache, build_cache, cache_key


def test_key_ignores_case_and_spacing_but_not_versions() -> None:
    base = cache_key("ga", "Daily  Active users", 10, False, "champion", "3", "idx1")
    assert base == cache_key("ga", " daily active USERS ", 10, False, "champion", "3", "idx1")
    assert base != cache_key("ga", "daily active users", 10, False, "champion", "4", "idx1")  # new model
    assert base != cache_key("ga", "daily active users", 10, False, "champion", "3", "idx2")  # new index
    assert base != cache_key("gb", "daily active users", 10, False, "champion", "3", "idx1")  # other tenant
    assert base != cache_key("ga", "daily active users", 5, False, "champion", "3", "idx1")
    assert base != cache_key("ga", "daily active users", 10, False, "challenger", "3", "idx1")


def test_lru_evicts_least_recently_used() -> None:
    cache = LruCache(2)
    cache.put("a", {"v": 1})
    cache.put("b", {"v": 2})
    assert cache.get("a") == {"v": 1}  # a is now the most recent
    cache.put("c", {"v": 3})
    assert cache.get("b") is None
    assert cache.get("a") == {"v": 1} and cache.get("c") == {"v": 3}
    assert len(cache) == 2


def test_size_zero_disables_the_cache() -> None:
    cache = build_cache(0, None, 60)
    cache.put("a", {"v": 1})
    assert cache.get("a") is None
