"""features/index: the brick-side list of objects with pending replicate changelog counters.

Stacked above storage/posix in a brick graph, it watches xattrop calls on the pending counters
`trusted.afr.<child>` and keeps one empty file per object where one of them is not zero (a
child missed a change), named by the gfid in hex, in `<index-base>/xattrop/`, so a brick that
comes back is healed without a crawl of the whole volume. The entry is made before an increment
reaches the disk, and removed once the object's pending counters are all zero again. The
in-flight mark `trusted.afr.dirty` is not indexed: it is set and cleared by every transaction,
and a brick that dies with it set is accused by the others, whose indexes list the object.

The list is read with a virtual xattr: getxattr on the root gfid of `glusterpy.index.pending`
answers the gfids (16 bytes each, concatenated). Before answering, each listed object is
checked against its counters on the brick, and entries of objects that are gone or clean are
dropped. Nothing else is virtual, and no setxattr is interpreted.

Invariant: xattrops on one gfid pass this translator one at a time, so the index entry always
follows the last answer.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from typing import Any

import trio

from glusterpy.volfile.options import Option, Path
from glusterpy.xlator import GFID_SIZE, ROOT_GFID, Translator, error, run_blocking

log = logging.getLogger(__name__)

INDEX_XATTR = "glusterpy.index.pending"
PENDING_PREFIX = "trusted.afr."
DIRTY_KEY = "trusted.afr.dirty"


def _nonzero(value: bytes) -> bool:
    return any(value)


def _is_pending(name: str) -> bool:
    return name.startswith(PENDING_PREFIX) and name != DIRTY_KEY


def _increments(xattrs: dict[str, bytes]) -> bool:
    for name, value in xattrs.items():
        if _is_pending(name):
            for i in range(0, len(value) - len(value) % 4, 4):
                if int.from_bytes(value[i : i + 4], "big", signed=True) > 0:
                    return True
    return False


class Index(Translator):
    """Keeps `<index-base>/xattrop/<gfid hex>` while the gfid's changelog is not clean."""

    type_name = "features/index"
    options_table = (
        Option(
            "index-base",
            Path(),
            None,
            required=True,
            help="directory for the index, e.g. <brick>/.glusterfs/indices",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self.directory = os.path.join(options["index-base"], "xattrop")
        self._listed: set[bytes] = set()
        self._locks: dict[bytes, trio.Lock] = {}

    async def start(self, nursery: trio.Nursery) -> None:
        await run_blocking(os.makedirs, self.directory, 0o700, True)
        names = await run_blocking(os.listdir, self.directory)
        for name in names:
            try:
                gfid = bytes.fromhex(name)
            except ValueError:
                continue
            if len(gfid) == GFID_SIZE:
                self._listed.add(gfid)
        log.info("%s: index at %s lists %d objects", self.name, self.directory, len(self._listed))

    def _path(self, gfid: bytes) -> str:
        return os.path.join(self.directory, gfid.hex())

    def _add(self, gfid: bytes) -> None:
        os.close(os.open(self._path(gfid), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        self._listed.add(gfid)

    def _remove(self, gfid: bytes) -> None:
        try:
            os.unlink(self._path(gfid))
        except FileNotFoundError:
            pass
        self._listed.discard(gfid)

    async def xattrop(self, gfid: bytes, op: str, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        lock = self._locks.setdefault(gfid, trio.Lock())
        try:
            async with lock:
                return await self._xattrop(gfid, op, xattrs)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(gfid, None)

    async def _xattrop(self, gfid: bytes, op: str, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        if gfid not in self._listed and _increments(xattrs):
            await run_blocking(self._add, gfid)
        result = await self.child.xattrop(gfid, op, xattrs)
        counters = [v for k, v in result.items() if _is_pending(k)]
        if any(map(_nonzero, counters)):
            if gfid not in self._listed:
                await run_blocking(self._add, gfid)
        elif counters and gfid in self._listed:
            # The answer may not cover every child's counter: check them all.
            await self._check(gfid)
        return result

    async def getxattr(self, gfid: bytes, name: str) -> bytes:
        if name != INDEX_XATTR:
            return await self.child.getxattr(gfid, name)
        if gfid != ROOT_GFID:
            raise error(errno.ENODATA, f"{INDEX_XATTR} is answered on the root only")
        pending = []
        for listed in sorted(self._listed):
            if await self._still_pending(listed):
                pending.append(listed)
        return b"".join(pending)

    async def _still_pending(self, gfid: bytes) -> bool:
        lock = self._locks.setdefault(gfid, trio.Lock())
        try:
            async with lock:
                return await self._check(gfid)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(gfid, None)

    async def _check(self, gfid: bytes) -> bool:
        """Check a listed object against its counters on the brick; drop it if clean or gone.

        The caller holds the gfid's lock.
        """
        try:
            for name in await self.child.listxattr(gfid):
                if _is_pending(name) and _nonzero(await self.child.getxattr(gfid, name)):
                    return True
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESTALE, errno.ENODATA):
                raise
        await run_blocking(self._remove, gfid)
        return False
