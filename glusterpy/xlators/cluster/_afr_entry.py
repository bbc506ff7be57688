"""Entry fops of cluster/replicate: create, remove and rename names, as entry transactions.

Each takes an entry lock on (parent, name) on every up child (both names for a rename, in a
fixed order) and marks the entry counters on the parent directory (both parents for a rename).
New objects get the caller's gfid on every child, so the copies of one object share a gfid.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from glusterpy.xlator import Iatt, Translator
from glusterpy.xlators.cluster._afr_changelog import ENTRY
from glusterpy.xlators.cluster._afr_transaction import (
    EntryLock,
    Transaction,
    first_success,
    successes,
)

if TYPE_CHECKING:
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)


class EntryFops:
    """Mixin of `Replicate` with the fops that change directory entries."""

    async def _entry(self: Replicate, parent: bytes, name: bytes, call) -> dict[int, Any]:
        txn = Transaction(self, ENTRY, [parent], [EntryLock(self.entry_domain, parent, name)])
        return await txn.run(call)

    async def mknod(
        self: Replicate,
        parent: bytes,
        name: bytes,
        mode: int,
        rdev: int,
        uid: int,
        gid: int,
        gfid: bytes,
    ) -> Iatt:
        results = await self._entry(
            parent, name, lambda i, child: child.mknod(parent, name, mode, rdev, uid, gid, gfid)
        )
        return first_success(results)

    async def mkdir(
        self: Replicate, parent: bytes, name: bytes, mode: int, uid: int, gid: int, gfid: bytes
    ) -> Iatt:
        results = await self._entry(
            parent, name, lambda i, child: child.mkdir(parent, name, mode, uid, gid, gfid)
        )
        return first_success(results)

    async def symlink(
        self: Replicate,
        parent: bytes,
        name: bytes,
        target: bytes,
        uid: int,
        gid: int,
        gfid: bytes,
    ) -> Iatt:
        results = await self._entry(
            parent, name, lambda i, child: child.symlink(parent, name, target, uid, gid, gfid)
        )
        return first_success(results)

    async def create(
        self: Replicate,
        parent: bytes,
        name: bytes,
        flags: int,
        mode: int,
        uid: int,
        gid: int,
        gfid: bytes,
    ) -> tuple[int, Iatt]:
        results = await self._entry(
            parent, name, lambda i, child: child.create(parent, name, flags, mode, uid, gid, gfid)
        )
        _, iatt = first_success(results)
        handles = {i: results[i][0] for i in successes(results)}
        return self.new_fd(gfid, flags, False, handles), iatt

    async def link(self: Replicate, gfid: bytes, parent: bytes, name: bytes) -> Iatt:
        results = await self._entry(parent, name, lambda i, child: child.link(gfid, parent, name))
        return first_success(results)

    async def unlink(self: Replicate, parent: bytes, name: bytes) -> None:
        results = await self._entry(parent, name, lambda i, child: child.unlink(parent, name))
        first_success(results)

    async def rmdir(self: Replicate, parent: bytes, name: bytes) -> None:
        results = await self._entry(parent, name, lambda i, child: child.rmdir(parent, name))
        first_success(results)

    async def rename(
        self: Replicate,
        oldparent: bytes,
        oldname: bytes,
        newparent: bytes,
        newname: bytes,
        flags: int = 0,
    ) -> None:
        names = sorted({(oldparent, oldname), (newparent, newname)})
        locks = [EntryLock(self.entry_domain, parent, name) for parent, name in names]
        txn = Transaction(self, ENTRY, [oldparent, newparent], locks)

        async def call(i: int, child: Translator) -> None:
            await child.rename(oldparent, oldname, newparent, newname, flags)

        first_success(await txn.run(call))
