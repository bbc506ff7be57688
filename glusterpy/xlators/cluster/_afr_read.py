"""Read selection of cluster/replicate: which child may answer a read of which object.

Replicate remembers, per gfid, the verdict of the last changelog it saw (on lookup, open, or a
refresh) and narrows it after each transaction to the children that applied the change. A read
goes to one readable child that is up: the read-subvolume option's child when it is readable,
otherwise a child picked by the gfid, so reads of different files spread over the children.
A child that is only a sink (it missed changes) never answers a read.

Invariant: an object in split-brain answers EIO to reads until it is resolved, unless the
favorite-child option names a child that then serves it.
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from glusterpy.xlator import Translator, error, gfid_to_ino
from glusterpy.xlators.cluster import _afr_changelog as changelog
from glusterpy.xlators.cluster._afr_changelog import Verdict

if TYPE_CHECKING:
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)

_TABLE_LIMIT = 65536


class InodeState:
    """The last known verdicts (data, metadata, entry) of one object."""

    __slots__ = ("verdicts",)

    def __init__(self, verdicts: list[Verdict]):
        self.verdicts = verdicts

    def readable(self, kind: int) -> frozenset[int]:
        verdict = self.verdicts[kind]
        return frozenset() if verdict.split_brain else verdict.sources

    def split_brain_kinds(self) -> list[str]:
        return [changelog.KIND_NAMES[k] for k, v in enumerate(self.verdicts) if v.split_brain]


class InodeTable:
    """Verdicts per gfid, least recently used dropped first beyond a fixed number."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        self._states: OrderedDict[bytes, InodeState] = OrderedDict()

    def get(self, gfid: bytes) -> InodeState | None:
        state = self._states.get(gfid)
        if state is not None:
            self._states.move_to_end(gfid)
        return state

    def record(self, gfid: bytes, changelogs: Mapping[int, Mapping[str, bytes]]) -> InodeState:
        """Remember the verdicts computed from the changelogs read on the answering children."""
        verdicts = [
            changelog.verdict_for(kind, changelogs, self.keys)
            for kind in (changelog.DATA, changelog.METADATA, changelog.ENTRY)
        ]
        state = InodeState(verdicts)
        self._states[gfid] = state
        self._states.move_to_end(gfid)
        while len(self._states) > _TABLE_LIMIT:
            self._states.popitem(last=False)
        return state

    def narrow(self, gfid: bytes, kind: int, applied: Sequence[int]) -> None:
        """After a change of `kind` applied only on `applied`, the others are not readable."""
        state = self._states.get(gfid)
        if state is None or not applied:
            return
        verdict = state.verdicts[kind]
        keep = verdict.sources & set(applied) or frozenset(applied)
        everyone = verdict.sources | verdict.sinks
        state.verdicts[kind] = Verdict(keep, frozenset(everyone - keep), False, False)

    def forget(self, gfid: bytes) -> None:
        self._states.pop(gfid, None)


def read_candidates(afr: Replicate, gfid: bytes, kind: int) -> list[int]:
    """The up children that may answer a read of `kind` on `gfid`, best first.

    Raises EIO for a split-brain (logged once per object) and ENOTCONN when no good copy is up.
    """
    state = afr.inodes.get(gfid)
    if state is None:
        readable: Sequence[int] = range(len(afr.children))
    else:
        verdict = state.verdicts[kind]
        if verdict.split_brain:
            favorite = afr.favorite_child
            if favorite is None or not afr.is_up(favorite):
                afr.report_split_brain(gfid, changelog.KIND_NAMES[kind])
                raise error(errno.EIO, f"{afr.name}: {changelog.KIND_NAMES[kind]} split-brain")
            return [favorite]
        readable = sorted(verdict.sources)
    up = [i for i in readable if afr.is_up(i)]
    if not up:
        raise error(errno.ENOTCONN, f"{afr.name}: no subvolume with a good copy is up")
    preferred = afr.read_subvolume
    if preferred in up:
        first = preferred
    else:
        first = up[gfid_to_ino(gfid) % len(up)]
    return [first] + [i for i in up if i != first]


async def read_from(
    afr: Replicate,
    gfid: bytes,
    kind: int,
    call: Callable[[int, Translator], Awaitable[Any]],
    candidates: Sequence[int] | None = None,
) -> Any:
    """Answer a read from the first readable child, trying the next one if a child is gone."""
    order = read_candidates(afr, gfid, kind) if candidates is None else list(candidates)
    last: OSError | None = None
    for i in order:
        try:
            return await call(i, afr.children[i])
        except OSError as exc:
            afr.child_failed(i, exc)
            if exc.errno != errno.ENOTCONN:
                raise
            last = exc
    raise last or error(errno.ENOTCONN, f"{afr.name}: no subvolume is up")
