"""The heal driver of cluster/replicate: heals on access, from the brick index, or everything.

Three ways an object gets healed, all through `heal_object`:
- on access: lookups and opens that see disagreeing children queue the gfid; one worker task
  heals the queue in order (duplicates are dropped while queued);
- from the index: each brick's features/index lists the gfids whose changelog counters are not
  zero; the crawler heals them when a child comes back up and every `heal-timeout` seconds;
- in full: `heal_tree` walks the whole volume from the root (the heal CLI's `heal full`).

Directories are healed before the objects below them, so a file missing on a child is created
(by its directory's entry heal) before its content is copied.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from glusterpy.xlator import ROOT_GFID, Iatt, Translator
from glusterpy.xlators.cluster import _afr_changelog as changelog
from glusterpy.xlators.cluster._afr_heal import (
    PRIVATE_XATTRS,
    Choice,
    Inspection,
    counters_set,
    heal_data,
    heal_metadata,
    inspect,
)
from glusterpy.xlators.cluster._afr_heal_entry import heal_entry, list_dir

if TYPE_CHECKING:
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)

# The virtual xattr features/index answers on the root: the pending gfids, 16 bytes each.
INDEX_XATTR = "glusterpy.index.pending"
_QUEUE_SIZE = 4096
_PROBE_INTERVAL = 2.0
NO_CHOICE = Choice()
# Files healed at once; each heal mostly waits on round trips to the bricks.
_PARALLEL_HEALS = 8

Progress = Callable[[str], None]


async def pending_on(child: Translator) -> list[bytes]:
    """The gfids one brick's index lists as having pending changelog counters."""
    raw = await child.getxattr(ROOT_GFID, INDEX_XATTR)
    return [raw[i : i + 16] for i in range(0, len(raw) - len(raw) % 16, 16)]


class SelfHeal:
    """Heals objects of one replicate translator; owns the on-access queue and the crawler.

    Invariant: at most one background heal runs at a time per translator (the worker and the
    crawler share `busy`), so heals never compete with each other for the same locks.
    """

    def __init__(self, afr: Replicate):
        self.afr = afr
        self.busy = trio.Lock()
        self.queued: set[bytes] = set()
        self._send, self._receive = trio.open_memory_channel[bytes](_QUEUE_SIZE)
        self._wake = trio.Event()
        self._parallel = trio.CapacityLimiter(_PARALLEL_HEALS)

    def schedule(self, gfid: bytes) -> None:
        """Queue `gfid` for a heal in the background; dropped if already queued or full."""
        if gfid in self.queued or not self.afr.background_heal:
            return
        try:
            self._send.send_nowait(gfid)
        except trio.WouldBlock:
            return
        self.queued.add(gfid)

    def wake(self) -> None:
        """Crawl the index soon (a child came up)."""
        self._wake.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._worker)
            nursery.start_soon(self._crawler)
            nursery.start_soon(self._prober)

    async def _worker(self) -> None:
        async for gfid in self._receive:
            self.queued.discard(gfid)
            async with self.busy:
                await self.heal_object(gfid)

    async def _crawler(self) -> None:
        while True:
            with trio.move_on_after(self.afr.heal_timeout):
                await self._wake.wait()
            self._wake = trio.Event()
            if self.afr.background_heal and len(self.afr.up_children()) > 1:
                async with self.busy:
                    await self.heal_index()

    async def _prober(self) -> None:
        """Ask children marked down by a failed call whether they answer again."""
        while True:
            await trio.sleep(_PROBE_INTERVAL)
            for i in range(len(self.afr.children)):
                if not self.afr.is_up(i):
                    try:
                        await self.afr.children[i].statfs(ROOT_GFID)
                    except OSError:
                        continue
                    self.afr.child_answered(i)

    async def heal_object(
        self, gfid: bytes, choice: Choice = NO_CHOICE, progress: Progress | None = None
    ) -> dict[str, str]:
        """Heal metadata, then data (files) or entries (directories) of one object.

        An unlocked look first skips the kinds with nothing to do (no counters set, attributes
        equal); directories always get an entry heal, which also catches names missing on a
        child that no counter mentions. Answers what happened per kind ("healed", "clean",
        "split-brain", or "error").
        """
        results: dict[str, str] = {}
        afr = self.afr
        try:
            found = await inspect(afr, gfid, afr.up_children())
            if not found.iatts:
                return {"object": "gone"}
            mode = found.iatts[found.present[0]].mode
            if afr.self_heal[changelog.METADATA] and await self._wants_metadata(
                gfid, found, choice
            ):
                results["metadata"] = await heal_metadata(afr, gfid, choice)
            if (
                stat.S_ISREG(mode)
                and afr.self_heal[changelog.DATA]
                and _wants_data(afr, found, choice)
            ):
                results["data"] = await heal_data(afr, gfid, choice, _byte_progress(progress))
            if stat.S_ISDIR(mode) and afr.self_heal[changelog.ENTRY]:
                results["entry"], followups = await heal_entry(afr, gfid, choice)
                await self._follow_up(followups, progress)
        except OSError as exc:
            log.warning("%s: heal of %s stopped: %s", afr.name, gfid.hex(), exc)
            results["error"] = exc.strerror or str(exc)
        finally:
            afr.inodes.forget(gfid)
        return results

    async def _wants_metadata(self, gfid: bytes, found: Inspection, choice: Choice) -> bool:
        if choice.policy is not None or counters_set(found, changelog.METADATA, self.afr.keys):
            return True
        iatts = [found.iatts[i] for i in found.present]
        if any(
            (a.mode, a.uid, a.gid) != (iatts[0].mode, iatts[0].uid, iatts[0].gid) for a in iatts
        ):
            return True
        if choice.forced is None or choice.forced not in found.iatts:
            return False
        # A copy an entry heal just made has the source's mode and owner; only user xattrs
        # would still be missing.
        names = await self.afr.children[choice.forced].listxattr(gfid)
        return any(not name.startswith(PRIVATE_XATTRS) for name in names)

    async def _follow_up(self, followups: list, progress: Progress | None) -> None:
        """Heal the objects an entry heal created: files several at a time, directories after."""

        async def one(gfid: bytes, source: int | None) -> None:
            async with self._parallel:
                await self.heal_object(gfid, _forced(source), progress)

        async with trio.open_nursery() as nursery:
            for gfid, source, is_dir in followups:
                if not is_dir:
                    nursery.start_soon(one, gfid, source)
        for gfid, source, is_dir in followups:
            if is_dir:
                await self.heal_object(gfid, _forced(source), progress)

    async def pending(self) -> dict[int, list[bytes] | OSError]:
        """Each child's index listing, or the error that child answered."""
        listing: dict[int, list[bytes] | OSError] = {}
        for i, child in enumerate(self.afr.children):
            try:
                listing[i] = await pending_on(child)
            except OSError as exc:
                self.afr.child_failed(i, exc)
                listing[i] = exc
        return listing

    async def status(self, gfid: bytes) -> str:
        """What `heal info` says of one object: split-brain, pending, or clean/gone."""
        found = await inspect(self.afr, gfid, self.afr.up_children())
        if not found.iatts:
            return "gone"
        pending = bool(found.missing)
        for kind in (changelog.DATA, changelog.METADATA, changelog.ENTRY):
            verdict = changelog.verdict_for(kind, found.changelogs, self.afr.keys)
            if verdict.split_brain:
                return "split-brain"
            pending = pending or counters_set(found, kind, self.afr.keys)
        return "pending" if pending else "clean"

    async def heal_index(self, choice: Choice = NO_CHOICE, progress: Progress | None = None) -> int:
        """Heal every gfid some brick's index lists, directories first; answers how many."""
        gfids: list[bytes] = []
        for listing in (await self.pending()).values():
            if not isinstance(listing, OSError):
                gfids += [g for g in listing if g not in gfids]
        kinds = await self._kinds(gfids)
        directories = [g for g in gfids if stat.S_ISDIR(kinds.get(g, 0))]
        done = 0

        async def one(gfid: bytes) -> None:
            nonlocal done
            async with self._parallel:
                results = await self.heal_object(gfid, choice, progress)
            done += 1
            if progress is not None:
                progress(f"[{done}/{len(gfids)}] {gfid.hex()}: {_summary(results)}")

        for gfid in directories:
            await one(gfid)
        async with trio.open_nursery() as nursery:
            for gfid in gfids:
                if gfid not in directories:
                    nursery.start_soon(one, gfid)
        return len(gfids)

    async def _kinds(self, gfids: list[bytes]) -> dict[bytes, int]:
        modes = {}
        for gfid in gfids:
            iatt = await self._any_stat(gfid)
            if iatt is not None:
                modes[gfid] = iatt.mode
        return modes

    async def _any_stat(self, gfid: bytes) -> Iatt | None:
        for i in self.afr.up_children():
            try:
                return await self.afr.children[i].stat(gfid)
            except OSError as exc:
                self.afr.child_failed(i, exc)
        return None

    async def heal_tree(self, progress: Progress | None = None) -> int:
        """Heal every object of the volume, walking directories from the root."""
        count = 0
        directories = [ROOT_GFID]
        while directories:
            gfid = directories.pop()
            results = await self.heal_object(gfid, Choice(), progress)
            count += 1
            if progress is not None:
                progress(f"[{count}] directory {gfid.hex()}: {_summary(results)}")
            for entry in (await self._listing(gfid)).values():
                if stat.S_ISDIR(entry.iatt.mode):
                    directories.append(entry.iatt.gfid)
                    continue
                results = await self.heal_object(entry.iatt.gfid, Choice(), progress)
                count += 1
                if progress is not None and "healed" in results.values():
                    progress(
                        f"[{count}] {entry.name.decode(errors='replace')}: {_summary(results)}"
                    )
        return count

    async def _listing(self, gfid: bytes) -> dict:
        for i in self.afr.up_children():
            try:
                return await list_dir(self.afr.children[i], gfid)
            except OSError as exc:
                self.afr.child_failed(i, exc)
                if exc.errno not in (errno.ENOTCONN, errno.ENOENT):
                    raise
        return {}


def _wants_data(afr: Replicate, found: Inspection, choice: Choice) -> bool:
    if choice.policy is not None or choice.forced is not None:
        return True
    if counters_set(found, changelog.DATA, afr.keys):
        return True
    return len({found.iatts[i].size for i in found.present}) > 1


def _forced(source: int | None) -> Choice:
    return NO_CHOICE if source is None else Choice(forced=source)


def _summary(results: dict[str, str]) -> str:
    return ", ".join(f"{kind} {what}" for kind, what in results.items()) or "nothing to do"


def _byte_progress(progress: Progress | None) -> Callable[[bytes, int], None] | None:
    if progress is None:
        return None
    step = 64 << 20
    marks: dict[bytes, int] = {}

    def report(gfid: bytes, copied: int) -> None:
        if copied >= marks.get(gfid, 0) + step:
            marks[gfid] = copied
            progress(f"  {gfid.hex()}: {copied >> 20} MiB copied")

    return report
