"""fastseg/segmenter/mru_cache.py: the buffers a loop keeps for its latest shapes."""
from __future__ import annotations

import pytest

from fastseg.segmenter.mru_cache import MruCache


def test_a_kept_key_is_not_made_again():
    cache, made = MruCache(2), []
    first = cache.get("a", lambda: made.append("a") or object())
    assert cache.get("a", lambda: made.append("a again") or object()) is first
    assert made == ["a"] and len(cache) == 1


def test_the_least_recently_used_key_goes_first():
    cache = MruCache(3)
    for key in "abc":
        cache.get(key, lambda k=key: k.upper())
    cache.get("a", lambda: "not made")   # "a" is now the most recently used: "b" is the oldest
    cache.get("d", lambda: "D")
    assert "b" not in cache and all(k in cache for k in "acd") and len(cache) == 3
    assert cache.get("a", lambda: "new") == "A"
    cache.get("e", lambda: "E")          # "c" is the oldest now
    assert "c" not in cache and len(cache) == 3


def test_a_changing_key_keeps_at_most_keep_values():
    cache = MruCache(4)
    for size in range(100):
        assert cache.get((size, size), lambda s=size: [s]) == [size]
    assert len(cache) == 4 and all((s, s) in cache for s in range(96, 100))


def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="keep"):
        MruCache(0)
