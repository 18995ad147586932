"""The LRU prediction cache: evicts the least recently used entry and counts its hit rate."""

from __future__ import annotations

import pytest

from mlsys.serving.online.cache import LRUCache


def test_evicts_the_least_recently_used_and_counts_hits():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now the most recent
    c.put("c", 3)
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3
    assert (c.hits, c.misses, len(c)) == (3, 1, 2)
    assert c.hit_rate == pytest.approx(0.75)


def test_capacity_zero_stores_nothing_and_negative_is_refused():
    c = LRUCache(0)
    c.put("a", 1)
    assert c.get("a") is None and len(c) == 0 and c.hit_rate == 0.0
    with pytest.raises(ValueError, match=r"LRUCache\.capacity=-1"):
        LRUCache(-1)
