"""Entry self-heal of cluster/replicate: make a directory list the same names on every child.

Under an entry lock on the whole directory on every up child, the directory's entry changelog
decides. With sources and sinks, each sink is made to match the source: missing names are
created with the source's gfid, mode and owner (a name whose gfid the sink already holds is
hard-linked, which also replays renames), extra names are removed (directories recursively),
and a name whose gfid differs (deleted and recreated meanwhile) is removed and created again.
When no child accuses another, names are only ever added (the union), never removed, since
nothing says which copy is right. A name with different gfids on children that nobody accuses
is a gfid split-brain: reported, left alone.

New objects need their content: the heal answers them as follow-ups (gfid, source child) that
the caller heals after the directory lock is dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import TYPE_CHECKING

from glusterpy.xlator import ROOT_GFID, DirEntry, Translator, error
from glusterpy.xlators.cluster._afr_changelog import ENTRY
from glusterpy.xlators.cluster._afr_heal import Choice, decide, inspect, take_back
from glusterpy.xlators.cluster._afr_transaction import EntryLock, LockSet

if TYPE_CHECKING:
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)

_SKIP = {b".", b".."}
_READDIR_COUNT = 512
FollowUp = tuple[bytes, int | None, bool]


async def list_dir(child: Translator, gfid: bytes) -> dict[bytes, DirEntry]:
    """Every entry of directory `gfid` on one child, by name."""
    entries: dict[bytes, DirEntry] = {}
    fh = await child.opendir(gfid)
    try:
        offset = 0
        while True:
            batch = await child.readdir(fh, offset, _READDIR_COUNT)
            if not batch:
                break
            for entry in batch:
                if entry.name not in _SKIP and not (
                    gfid == ROOT_GFID and entry.name == b".glusterfs"
                ):
                    entries[entry.name] = entry
            offset = batch[-1].offset
    finally:
        await child.releasedir(fh)
    return entries


async def heal_entry(afr: Replicate, gfid: bytes, choice: Choice) -> tuple[str, list[FollowUp]]:
    """Heal the names of directory `gfid`; answers what happened and the follow-ups."""
    locks = LockSet(afr, [EntryLock(afr.entry_domain, gfid, None)])
    try:
        locked = await locks.acquire(afr.up_children())
        found = await inspect(afr, gfid, locked)
        if not found.present:
            return "gone", []
        verdict = decide(afr, gfid, ENTRY, found, choice)
        if verdict is None:
            return "split-brain", []
        listings = {i: await list_dir(afr.children[i], gfid) for i in found.present}
        if verdict.sinks:
            source = min(verdict.sources)
            followups = []
            for sink in sorted(verdict.sinks):
                followups += await _match(afr, gfid, listings, source, sink)
        else:
            followups = await _union(afr, gfid, listings)
        await take_back(afr, gfid, ENTRY, found, found.present)
    finally:
        await locks.release()
    changed = "healed" if followups or verdict.sinks else "clean"
    if changed == "healed":
        log.info("%s: entries of directory %s healed", afr.name, gfid.hex())
    return changed, followups


async def _match(
    afr: Replicate,
    parent: bytes,
    listings: dict[int, dict[bytes, DirEntry]],
    source: int,
    sink: int,
) -> list[FollowUp]:
    """Make `sink`'s listing equal the source's."""
    wanted, present = listings[source], listings[sink]
    followups: list[FollowUp] = []
    for name, entry in present.items():
        if name not in wanted or wanted[name].iatt.gfid != entry.iatt.gfid:
            await _remove(afr.children[sink], parent, entry)
    for name, entry in wanted.items():
        if name in present and present[name].iatt.gfid == entry.iatt.gfid:
            continue
        followups.append(await _create(afr, sink, source, parent, entry))
    return followups


async def _union(
    afr: Replicate, parent: bytes, listings: dict[int, dict[bytes, DirEntry]]
) -> list[FollowUp]:
    """Add each name some child lacks, from the first child that has it."""
    followups: list[FollowUp] = []
    names = sorted({name for listing in listings.values() for name in listing})
    for name in names:
        holders = [i for i in sorted(listings) if name in listings[i]]
        gfids = {listings[i][name].iatt.gfid for i in holders}
        if len(gfids) > 1:
            afr.report_split_brain(parent, "gfid of " + name.decode(errors="replace"))
            continue
        source = holders[0]
        for sink in sorted(listings):
            if sink not in holders:
                followups.append(await _create(afr, sink, source, parent, listings[source][name]))
    return followups


async def _create(
    afr: Replicate, sink: int, source: int, parent: bytes, entry: DirEntry
) -> FollowUp:
    """Create `entry` on the sink with the source's gfid; the follow-up heals its content."""
    child = afr.children[sink]
    iatt = entry.iatt
    perm = stat.S_IMODE(iatt.mode)
    if not stat.S_ISDIR(iatt.mode) and await _exists(child, iatt.gfid):
        await child.link(iatt.gfid, parent, entry.name)
        return iatt.gfid, None, False
    if stat.S_ISDIR(iatt.mode):
        await child.mkdir(parent, entry.name, perm, iatt.uid, iatt.gid, iatt.gfid)
    elif stat.S_ISREG(iatt.mode):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fh, _ = await child.create(parent, entry.name, flags, perm, iatt.uid, iatt.gid, iatt.gfid)
        await child.release(fh)
    elif stat.S_ISLNK(iatt.mode):
        target = await afr.children[source].readlink(iatt.gfid)
        await child.symlink(parent, entry.name, target, iatt.uid, iatt.gid, iatt.gfid)
    else:
        await child.mknod(parent, entry.name, iatt.mode, iatt.rdev, iatt.uid, iatt.gid, iatt.gfid)
    log.debug("%s: created %r on %s", afr.name, entry.name, child.name)
    return iatt.gfid, source, stat.S_ISDIR(iatt.mode)


async def _exists(child: Translator, gfid: bytes) -> bool:
    try:
        await child.stat(gfid)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESTALE):
            return False
        raise
    return True


async def _remove(child: Translator, parent: bytes, entry: DirEntry) -> None:
    """Remove one name from one child; a directory goes with everything below it."""
    if stat.S_ISDIR(entry.iatt.mode):
        for inner in (await list_dir(child, entry.iatt.gfid)).values():
            await _remove(child, entry.iatt.gfid, inner)
        await child.rmdir(parent, entry.name)
    else:
        await child.unlink(parent, entry.name)
    log.debug("removed %r from %s", entry.name, child.name)


async def resolve_name(afr: Replicate, parent: bytes, name: bytes, source: int) -> list[FollowUp]:
    """Make one name in `parent` the source's object on every up child (a gfid split-brain).

    Only that name changes; the rest of the directory is left to the entry heal.
    """
    locks = LockSet(afr, [EntryLock(afr.entry_domain, parent, name)])
    followups: list[FollowUp] = []
    try:
        locked = await locks.acquire(afr.up_children())
        if source not in locked:
            raise error(errno.ENOTCONN, f"{afr.children[source].name} could not be locked")
        wanted = await _entry_on(afr.children[source], parent, name)
        for sink in locked:
            if sink == source:
                continue
            present = await _entry_on(afr.children[sink], parent, name)
            if present is not None and wanted is not None and present.iatt.gfid == wanted.iatt.gfid:
                continue
            if present is not None:
                await _remove(afr.children[sink], parent, present)
            if wanted is not None:
                followups.append(await _create(afr, sink, source, parent, wanted))
    finally:
        await locks.release()
    log.warning(
        "%s: %r in %s resolved with %s as source",
        afr.name,
        name,
        parent.hex(),
        afr.children[source].name,
    )
    return followups


async def _entry_on(child: Translator, parent: bytes, name: bytes) -> DirEntry | None:
    try:
        iatt, _ = await child.lookup(parent, name, None)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESTALE):
            return None
        raise
    return DirEntry(name, 0, iatt)
