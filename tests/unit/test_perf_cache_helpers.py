"""Unit tests of what the caching translators share: Freshness marks and TimedLru."""

from __future__ import annotations

import time

from glusterpy.xlators.performance import _cache
from glusterpy.xlators.performance._cache import Freshness, TimedLru


def test_a_fetch_is_fresh_unless_its_key_changed_meanwhile():
    freshness = Freshness()
    with freshness.fetching() as token:
        with freshness.changing(b"other"):
            pass
        assert freshness.fresh(b"key", token)
        with freshness.changing(b"key"):
            assert not freshness.fresh(b"key", token)
        assert not freshness.fresh(b"key", token)
    with freshness.fetching() as later:
        assert freshness.fresh(b"key", later)


def test_a_change_in_flight_makes_every_fetch_of_its_key_stale():
    freshness = Freshness()
    with freshness.changing(b"key"):
        with freshness.fetching() as token:
            assert not freshness.fresh(b"key", token)
    with freshness.fetching() as token:
        assert freshness.fresh(b"key", token)


def test_clear_all_and_too_many_marks_make_everything_stale(monkeypatch):
    freshness = Freshness()
    with freshness.fetching() as token:
        freshness.clear_all()
        assert not freshness.fresh(b"any", token)

    monkeypatch.setattr(_cache, "MAX_MARKS", 3)
    with freshness.fetching() as token:
        for key in (b"a", b"b", b"c", b"d"):
            freshness.mark(key)
        assert len(freshness._marks) <= 3
        assert not freshness.fresh(b"unrelated", token)
    assert freshness._marks == {}


def test_timed_lru_expires_and_bounds(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(_cache, "now", lambda: clock[0])
    lru: TimedLru[int] = TimedLru(timeout=2, limit=2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)  # "b" is the least recently used
    assert lru.get("b") is None and len(lru) == 2
    clock[0] += 2
    assert lru.get("a") is None and lru.get("c") is None


def test_timed_lru_with_timeout_zero_keeps_nothing():
    lru: TimedLru[int] = TimedLru(timeout=0, limit=10)
    lru.put("a", 1)
    assert lru.get("a") is None and len(lru) == 0


def test_now_is_monotonic():
    assert _cache.now() <= _cache.now()
    assert abs(_cache.now() - time.monotonic()) < 1
