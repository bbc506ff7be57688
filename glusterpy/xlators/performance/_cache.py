"""What the caching translators share: change marks (`Freshness`) and a bounded timed map.

`Freshness` tells a cache whether an answer fetched from below may still be cached.

A cache fills itself from answers that come back from its child, but a modifying fop on the
same object may start or finish while such a fetch is on its way; the answer may then describe
the object as it was before the change, and caching it would serve stale data to our own
client. `Freshness` counts changes so that a fetch can ask, when its answer arrives, whether
anything changed the object since it began.

Invariants:
- Every modifying fop on key K runs inside `changing(K)`, which marks K changed both when it
  starts and when it ends, and counts it as in flight meanwhile.
- `fresh(K, token)` is true only if no change of K (and no `clear_all`) was marked after
  `token = begin()` and no change of K is in flight now. An answer is cached only then.
- Memory is bounded: marks are dropped when no fetch is pending, and past `MAX_MARKS` keys
  the marks collapse into one `clear_all`, which only makes `fresh` answer false more often.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

MAX_MARKS = 10_000
V = TypeVar("V")


def now() -> float:
    """The clock every cache's expiry uses (monotonic, in seconds)."""
    return time.monotonic()


class Freshness:
    """Change marks per key; see the module docstring."""

    def __init__(self) -> None:
        self._counter = 0
        self._cleared_at = 0
        self._marks: dict[Hashable, int] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._fetches = 0

    def begin(self) -> int:
        """Start a fetch; pass the token to `fresh` and then call `end` exactly once."""
        self._fetches += 1
        return self._counter

    def end(self) -> None:
        self._fetches -= 1
        if self._fetches == 0:
            self._marks.clear()

    def fresh(self, key: Hashable, token: int) -> bool:
        if self._in_flight.get(key):
            return False
        changed = max(self._cleared_at, self._marks.get(key, 0))
        return changed <= token

    def mark(self, key: Hashable) -> None:
        """Record a change of `key` now."""
        self._counter += 1
        if self._fetches == 0:
            return
        if len(self._marks) >= MAX_MARKS:
            self._marks.clear()
            self._cleared_at = self._counter
        else:
            self._marks[key] = self._counter

    def clear_all(self) -> None:
        """Record a change of every key (used when the changed object is not known)."""
        self._counter += 1
        self._cleared_at = self._counter
        self._marks.clear()

    @contextlib.contextmanager
    def changing(self, *keys: Hashable) -> Iterator[None]:
        """Hold `keys` as changing for the duration of a modifying fop."""
        for key in keys:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self.mark(key)
        try:
            yield
        finally:
            for key in keys:
                self.mark(key)
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]

    @contextlib.contextmanager
    def fetching(self) -> Iterator[int]:
        """`with freshness.fetching() as token:` around a fetch whose answer may be cached."""
        token = self.begin()
        try:
            yield token
        finally:
            self.end()


class TimedLru(Generic[V]):
    """At most `limit` values, each valid for `timeout` seconds after it was put in.

    `get` answers only unexpired values and drops expired ones; putting a value in when full
    drops the least recently used one. A timeout of 0 (or less) keeps nothing.
    """

    def __init__(self, timeout: float, limit: int):
        self.timeout = timeout
        self.limit = limit
        self._items: collections.OrderedDict[Hashable, tuple[V, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if now() >= item[1]:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: V) -> None:
        if self.timeout <= 0 or self.limit <= 0:
            return
        self._items[key] = (value, now() + self.timeout)
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def pop(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()
