"""Self-heal of cluster/replicate: metadata and data of one object, and the shared decisions.

Every heal follows the same steps: lock the object on every up child (inodelk in the heal
kind's domain), read each child's changelog and attributes, decide sources and sinks, copy from
one source to the sinks, then take back the counters read at the start (not zero them, so
transactions that began meanwhile keep their marks), and unlock.

Data is copied in windows: the whole file is locked only to decide and to finish, each window
of `self-heal-window-size` blocks is locked on its own, so writers wait at most one window.
Split-brains are never resolved silently: only the favorite-child option or an explicit
policy (bigger-file, latest-mtime, source-brick) picks a source, and the choice is logged.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from glusterpy.xlator import Iatt, SetAttr, Translator
from glusterpy.xlators.cluster import _afr_changelog as changelog
from glusterpy.xlators.cluster._afr_changelog import DATA, METADATA, Verdict
from glusterpy.xlators.cluster._afr_transaction import (
    WHOLE,
    InodeLock,
    LockSet,
    fan_out,
)

if TYPE_CHECKING:
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)

BLOCK_SIZE = 128 * 1024
POLICIES = ("bigger-file", "latest-mtime", "source-brick")
# Xattrs that belong to the brick or to replicate itself, never copied by a metadata heal.
PRIVATE_XATTRS = ("trusted.afr.", "trusted.gfid", "trusted.glusterfs.", "glusterpy.")


@dataclass(frozen=True, slots=True)
class Choice:
    """How to pick a source: a split-brain policy, or a child forced by an entry heal."""

    policy: str | None = None
    brick: int | None = None
    forced: int | None = None


@dataclass(slots=True)
class Inspection:
    """What the answering children hold for one object: attributes and changelog xattrs."""

    iatts: dict[int, Iatt] = field(default_factory=dict)
    changelogs: dict[int, dict[str, bytes]] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)

    @property
    def present(self) -> list[int]:
        return sorted(self.iatts)


async def inspect(afr: Replicate, gfid: bytes, children: Sequence[int]) -> Inspection:
    """Read attributes and all changelog counters of `gfid` on `children`.

    The counters are read with an xattrop adding zeros: one atomic call per child that answers
    every key, present or not.
    """
    zeros = {key: changelog.ZERO for key in afr.all_keys}

    async def look(i: int, child: Translator) -> tuple[Iatt, dict[str, bytes]]:
        answers: dict[str, Any] = {}

        async def ask(what: str, call: Callable[[], Awaitable[Any]]) -> None:
            try:
                answers[what] = await call()
            except OSError as exc:
                answers[what] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "stat", lambda: child.stat(gfid))
            nursery.start_soon(ask, "xattrs", lambda: child.xattrop(gfid, "add-array", zeros))
        for answer in answers.values():
            if isinstance(answer, OSError):
                raise answer
        return answers["stat"], answers["xattrs"]

    found = Inspection()
    for i, result in (await fan_out(afr, children, look)).items():
        if isinstance(result, OSError):
            if result.errno in (errno.ENOENT, errno.ESTALE):
                found.missing.append(i)
            continue
        found.iatts[i], found.changelogs[i] = result
    return found


def policy_source(afr: Replicate, choice: Choice, iatts: Mapping[int, Iatt]) -> int | None:
    """The child a split-brain resolution makes the source, or None if it cannot decide."""
    if choice.forced is not None:
        return choice.forced if choice.forced in iatts else None
    if choice.policy == "source-brick":
        return choice.brick if choice.brick in iatts else None
    if choice.policy in ("bigger-file", "latest-mtime"):
        attr = "size" if choice.policy == "bigger-file" else "mtime_ns"
        best = max(getattr(iatt, attr) for iatt in iatts.values())
        winners = [i for i, iatt in iatts.items() if getattr(iatt, attr) == best]
        return winners[0] if len(winners) == 1 else None
    if afr.favorite_child is not None and afr.favorite_child in iatts:
        return afr.favorite_child
    return None


def _meta_differs(a: Iatt, b: Iatt) -> bool:
    return (a.mode, a.uid, a.gid) != (b.mode, b.uid, b.gid)


def decide(
    afr: Replicate, gfid: bytes, kind: int, found: Inspection, choice: Choice
) -> Verdict | None:
    """Sources and sinks for one heal kind; None for a split-brain no policy resolves."""
    present = found.present
    verdict = changelog.verdict_for(kind, found.changelogs, afr.keys)
    if choice.forced is not None or verdict.split_brain:
        source = policy_source(afr, choice, found.iatts)
        if source is None:
            afr.report_split_brain(gfid, changelog.KIND_NAMES[kind])
            return None
        if verdict.split_brain:
            log.warning(
                "%s: %s split-brain of %s resolved with %s as source (%s)",
                afr.name,
                changelog.KIND_NAMES[kind],
                gfid.hex(),
                afr.children[source].name,
                choice.policy or ("favorite-child" if choice.forced is None else "entry heal"),
            )
        return changelog.forced(source, present)
    if verdict.sinks or not present:
        return verdict
    iatts = found.iatts
    first = present[0]
    if kind == DATA and len({iatts[i].size for i in present}) > 1:
        biggest = max(present, key=lambda i: (iatts[i].size, -i))
        return changelog.forced(biggest, present)
    if kind == METADATA and any(_meta_differs(iatts[first], iatts[i]) for i in present):
        return changelog.forced(first, present)
    return verdict


async def take_back(
    afr: Replicate, gfid: bytes, kind: int, found: Inspection, children: Sequence[int]
) -> None:
    """Subtract the counters of `kind` read at inspection, on each child in `children`."""

    async def undo(i: int, child: Translator) -> None:
        operand = changelog.undo_operand(found.changelogs, i, afr.keys, kind, found.present)
        if any(value != changelog.ZERO for value in operand.values()):
            await child.xattrop(gfid, "add-array", operand)

    await fan_out(afr, [i for i in children if i in found.changelogs], undo)


def counters_set(found: Inspection, kind: int, keys: Sequence[str]) -> bool:
    """Whether any child has a pending or in-flight counter of `kind` set."""
    matrix = changelog.matrix_for(kind, found.changelogs, keys)
    dirty = changelog.dirty_for(kind, found.changelogs)
    return any(any(row) for row in matrix.values()) or any(dirty.values())


async def heal_metadata(afr: Replicate, gfid: bytes, choice: Choice) -> str:
    """Copy mode, owner, times and user xattrs from a source; answers what happened."""
    locks = LockSet(afr, [InodeLock(afr.metadata_domain, gfid, *WHOLE)])
    try:
        locked = await locks.acquire(afr.up_children())
        found = await inspect(afr, gfid, locked)
        verdict = decide(afr, gfid, METADATA, found, choice)
        if verdict is None:
            return "split-brain"
        if not verdict.sinks and not counters_set(found, METADATA, afr.keys):
            return "clean"
        source = min(verdict.sources)
        for sink in sorted(verdict.sinks):
            await _copy_metadata(afr, gfid, source, sink, found.iatts[source])
        await take_back(afr, gfid, METADATA, found, found.present)
        log.info(
            "%s: metadata of %s healed from %s to %s",
            afr.name,
            gfid.hex(),
            afr.children[source].name,
            _names(afr, verdict.sinks),
        )
        return "healed"
    finally:
        await locks.release()


async def _copy_metadata(afr: Replicate, gfid: bytes, source: int, sink: int, iatt: Iatt) -> None:
    src, dst = afr.children[source], afr.children[sink]
    attr = SetAttr(
        mode=iatt.mode & 0o7777,
        uid=iatt.uid,
        gid=iatt.gid,
        atime_ns=iatt.atime_ns,
        mtime_ns=iatt.mtime_ns,
    )
    await dst.setattr(gfid, attr)
    wanted = {name for name in await src.listxattr(gfid) if not name.startswith(PRIVATE_XATTRS)}
    present = {name for name in await dst.listxattr(gfid) if not name.startswith(PRIVATE_XATTRS)}
    for name in sorted(present - wanted):
        await dst.removexattr(gfid, name)
    for name in sorted(wanted):
        value = await src.getxattr(gfid, name)
        if name not in present or await dst.getxattr(gfid, name) != value:
            await dst.setxattr(gfid, name, value)


# The lock domain of data heals is the data domain's name with this after it.
HEAL_DOMAIN_SUFFIX = ".self-heal"


def _names(afr: Replicate, children: Sequence[int] | frozenset[int]) -> str:
    return ",".join(afr.children[i].name for i in sorted(children))


async def heal_data(afr: Replicate, gfid: bytes, choice: Choice, progress=None) -> str:
    """Copy the content of a regular file from a source to the sinks.

    A file that fits in one window is copied under the whole-file lock at once; a bigger one
    window by window, each under its own lock. A lock in the self-heal domain, held
    throughout, keeps a second heal of the file (by any client) from reading the counters
    this one has not taken back yet and taking them back a second time.
    """
    healing = LockSet(afr, [InodeLock(afr.data_domain + HEAL_DOMAIN_SUFFIX, gfid, *WHOLE)])
    try:
        await healing.acquire(afr.up_children())
        return await _heal_data_locked(afr, gfid, choice, progress)
    finally:
        await healing.release()


async def _heal_data_locked(afr: Replicate, gfid: bytes, choice: Choice, progress) -> str:
    whole = LockSet(afr, [InodeLock(afr.data_domain, gfid, *WHOLE)])
    try:
        locked = await whole.acquire(afr.up_children())
        found = await inspect(afr, gfid, locked)
        verdict = decide(afr, gfid, DATA, found, choice)
        if verdict is None:
            return "split-brain"
        if not verdict.sinks:
            if counters_set(found, DATA, afr.keys):
                await take_back(afr, gfid, DATA, found, found.present)
            return "clean"
        source = min(verdict.sources)
        sinks = sorted(verdict.sinks)
        copier = _DataCopier(afr, gfid, source, sinks, progress)
        if found.iatts[source].size <= copier.window:
            await copier.run_small(found)
    finally:
        await whole.release()
    if not copier.size and found.iatts[source].size > copier.window:
        await copier.run(found)
    log.info(
        "%s: data of %s healed from %s to %s (%d bytes)",
        afr.name,
        gfid.hex(),
        afr.children[source].name,
        _names(afr, sinks),
        copier.size,
    )
    return "healed"


class _DataCopier:
    """Copies one file's content from `source` to `sinks` through open handles on each."""

    def __init__(self, afr: Replicate, gfid: bytes, source: int, sinks: list[int], progress):
        self.afr = afr
        self.gfid = gfid
        self.source = source
        self.sinks = sinks
        self.progress = progress
        self.window = afr.heal_window_blocks * BLOCK_SIZE
        self.handles: dict[int, int] = {}
        self.copied = 0
        self.size = 0

    async def _open(self) -> None:
        async def open_one(i: int, child: Translator) -> None:
            self.handles[i] = await child.open(self.gfid, os.O_RDWR)

        results = await fan_out(self.afr, [self.source, *self.sinks], open_one)
        for result in results.values():
            if isinstance(result, OSError):
                raise result

    async def _close(self) -> None:
        handles, self.handles = self.handles, {}
        await fan_out(self.afr, list(handles), lambda i, child: child.release(handles[i]))

    async def run_small(self, found: Inspection) -> None:
        """Copy a file that fits in one window; the caller holds the whole-file lock."""
        try:
            await self._open()
            src = self.afr.children[self.source]
            data = await src.read(self.handles[self.source], 0, self.window)
            # The whole-file lock is held since the inspection: its size and times still hold.
            iatt = found.iatts[self.source]
            await self._settle(data, iatt)
            await take_back(self.afr, self.gfid, DATA, found, found.present)
            self.size = iatt.size
        finally:
            await self._close()

    async def _settle(self, data: bytes, iatt: Iatt, offset: int = 0) -> None:
        """Write `data` at `offset` on every sink, then its size and times, then fsync."""
        times = SetAttr(size=iatt.size, atime_ns=iatt.atime_ns, mtime_ns=iatt.mtime_ns)

        async def settle(i: int, child: Translator) -> None:
            if data:
                await child.write(self.handles[i], offset, data)
            await child.setattr(self.gfid, times, self.handles[i])
            await child.fsync(self.handles[i], False)

        results = await fan_out(self.afr, self.sinks, settle)
        for result in results.values():
            if isinstance(result, OSError):
                raise result

    async def run(self, found: Inspection) -> None:
        try:
            await self._open()
            offset = 0
            while not await self._window(offset):
                offset += self.window
            await self._finish(found)
        finally:
            await self._close()

    async def _window(self, offset: int) -> bool:
        """Copy one window under its own lock; True once the source ended inside it."""
        locks = LockSet(self.afr, [InodeLock(self.afr.data_domain, self.gfid, offset, self.window)])
        try:
            await locks.acquire([self.source, *self.sinks])
            data = await self.afr.children[self.source].read(
                self.handles[self.source], offset, self.window
            )
            await self._write_sinks(offset, data)
        finally:
            await locks.release()
        self.copied = offset + len(data)
        if self.progress is not None:
            self.progress(self.gfid, self.copied)
        return len(data) < self.window

    async def _write_sinks(self, offset: int, data: bytes) -> None:
        if not data:
            return
        for sink in self.sinks:
            child = self.afr.children[sink]
            current = await child.read(self.handles[sink], offset, len(data))
            if current != data:
                await child.write(self.handles[sink], offset, data)

    async def _finish(self, found: Inspection) -> None:
        """Under the whole-file lock: copy what was appended meanwhile, fix size and times."""
        whole = LockSet(self.afr, [InodeLock(self.afr.data_domain, self.gfid, *WHOLE)])
        try:
            await whole.acquire([self.source, *self.sinks])
            src = self.afr.children[self.source]
            iatt = await src.fstat(self.handles[self.source])
            offset = self.copied
            while offset < iatt.size:
                data = await src.read(self.handles[self.source], offset, self.window)
                if not data:
                    break
                await self._write_sinks(offset, data)
                offset += len(data)
            await self._settle(b"", iatt)
            self.size = iatt.size
            await take_back(self.afr, self.gfid, DATA, found, found.present)
        finally:
            await whole.release()
