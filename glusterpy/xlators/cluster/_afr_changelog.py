"""Changelog counters of cluster/replicate: their encoding and who heals whom.

Every child j has a pending xattr (`trusted.afr.<name of child j>`) on every object, holding three
big-endian int32 counters: data, metadata, entry. The copy of child j's counters kept on child i
counts the changes child i applied and knows child j missed. Besides these, `trusted.afr.dirty`
on child i counts transactions in flight on it (set before the fop, taken back after). Entry
counters live on the parent directory of the entry that changed.

From the copies read on every answering child we build, for one kind of change, the accusation
matrix M[i][j] (child j's counter as stored on child i) and decide:

- a *fool* is dirty or accuses itself: a transaction was in flight on it, or died in one; a
  fool's accusations do not count;
- an *accuser* is a non-fool that accuses another child;
- *sources* are the answering children nobody (no accuser) accuses; the others are *sinks*;
- no sources at all while accusers exist is a split-brain: the copies blame each other, and
  nothing is healed until a person (or the favorite-child option) picks a source.

This module is pure: no I/O, no translator.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DATA, METADATA, ENTRY = 0, 1, 2
KIND_NAMES = ("data", "metadata", "entry")
COUNTERS_SIZE = 12
ZERO = bytes(COUNTERS_SIZE)
DIRTY_KEY = "trusted.afr.dirty"
_FORMAT = ">iii"


def encode(counters: Sequence[int]) -> bytes:
    """Three counters as the 12-byte xattr value."""
    return struct.pack(_FORMAT, *counters)


def decode(value: bytes | None) -> tuple[int, int, int]:
    """The three counters of an xattr value; a missing value means no pending change."""
    if not value:
        return (0, 0, 0)
    if len(value) != COUNTERS_SIZE:
        raise ValueError(f"changelog value has {len(value)} bytes, expected {COUNTERS_SIZE}")
    return struct.unpack(_FORMAT, value)


def delta(kind: int, amount: int) -> bytes:
    """An xattrop operand that adds `amount` to the counter of one kind."""
    counters = [0, 0, 0]
    counters[kind] = amount
    return encode(counters)


def matrix_for(
    kind: int, changelogs: Mapping[int, Mapping[str, bytes]], keys: Sequence[str]
) -> dict[int, list[int]]:
    """M[i][j] for one kind, from each answering child i's xattrs (key of child j = keys[j])."""
    matrix = {}
    for i, xattrs in changelogs.items():
        row = []
        for key in keys:
            try:
                row.append(decode(xattrs.get(key))[kind])
            except ValueError:
                log.warning("ignoring a malformed changelog %s on child %d", key, i)
                row.append(0)
        matrix[i] = row
    return matrix


@dataclass(frozen=True, slots=True)
class Verdict:
    """Who is good and who needs healing, for one kind of change of one object.

    `sources` and `sinks` split the answering children. `fools_only` says no child accused
    another but some accused themselves (a transaction in flight, or one that died midway):
    under the heal lock that means a crashed transaction, healed from one chosen child.
    """

    sources: frozenset[int]
    sinks: frozenset[int]
    split_brain: bool
    fools_only: bool

    @property
    def needs_heal(self) -> bool:
        return bool(self.sinks) or self.split_brain or self.fools_only


def dirty_for(kind: int, changelogs: Mapping[int, Mapping[str, bytes]]) -> dict[int, int]:
    """Each answering child's in-flight counter of one kind."""
    dirty = {}
    for i, xattrs in changelogs.items():
        try:
            dirty[i] = decode(xattrs.get(DIRTY_KEY))[kind]
        except ValueError:
            dirty[i] = 0
    return dirty


def verdict_for(
    kind: int, changelogs: Mapping[int, Mapping[str, bytes]], keys: Sequence[str]
) -> Verdict:
    """The verdict for one kind from the changelog xattrs read on the answering children."""
    return find_direction(matrix_for(kind, changelogs, keys), dirty_for(kind, changelogs))


def find_direction(
    matrix: Mapping[int, Sequence[int]], dirty: Mapping[int, int] | None = None
) -> Verdict:
    """Sources and sinks among the children in `matrix` (the ones that answered)."""
    present = sorted(matrix)
    dirty = dirty or {}
    fools = {i for i in present if matrix[i][i] != 0 or dirty.get(i, 0) != 0}
    accusers = [
        i for i in present if i not in fools and any(matrix[i][j] for j in present if j != i)
    ]
    accused = {j for i in accusers for j in present if j != i and matrix[i][j]}
    if not accusers:
        everyone = frozenset(present)
        return Verdict(everyone, frozenset(), False, bool(fools))
    sources = [i for i in present if i not in accused]
    wise_sources = [i for i in sources if i not in fools]
    if wise_sources:
        sources = wise_sources
    if not sources:
        return Verdict(frozenset(), frozenset(present), True, False)
    return Verdict(frozenset(sources), frozenset(present) - set(sources), False, False)


def forced(source: int, present: Sequence[int]) -> Verdict:
    """A verdict that makes `source` the only source, as a split-brain resolution does."""
    return Verdict(frozenset({source}), frozenset(present) - {source}, False, False)


def undo_operand(
    rows: Mapping[int, Mapping[str, bytes]],
    child: int,
    keys: Sequence[str],
    kind: int,
    columns: Iterable[int],
) -> dict[str, bytes]:
    """The xattrop operand that takes back, on `child`, the counters of `kind` read earlier.

    Only the counters of children in `columns` (the ones a heal reached) are taken back: the
    marks against a child that is down must stay. Subtracting what was read, instead of
    writing zeros, keeps the marks of transactions that started after the read.
    """
    row = rows.get(child, {})
    wanted = set(columns)
    operand = {}
    for j, key in enumerate(keys):
        value = decode(row.get(key))[kind] if j in wanted else 0
        operand[key] = delta(kind, -value)
    operand[DIRTY_KEY] = delta(kind, -decode(row.get(DIRTY_KEY))[kind])
    return operand
