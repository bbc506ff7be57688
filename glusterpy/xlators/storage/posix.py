"""storage/posix: serves one brick directory, addressing objects by gfid.

Files live under their own names in the brick, so an admin can read a brick with plain tools;
`.glusterfs` holds the gfid handle tree (see `posix_handles`). The disk work is in `posix_ops`;
this module owns the open-handle tables and runs every blocking call through `run_blocking`,
so that performance/io-threads above can move it into its threads.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from glusterpy.volfile.options import Bool, Int, Option, Path
from glusterpy.xlator import (
    DirEntry,
    Event,
    Iatt,
    SetAttr,
    StatVfs,
    Translator,
    error,
    run_blocking,
)
from glusterpy.xlators.storage.posix_handles import HandleTree
from glusterpy.xlators.storage.posix_ops import BrickOps

log = logging.getLogger(__name__)

# A bound on one read so a bad request cannot make the brick allocate without limit; a short
# read would look like end of file to FUSE, so larger requests are refused, not shortened.
MAX_READ = 64 << 20


@dataclass(slots=True)
class OpenFile:
    """An open regular file: the os fd that reads and writes go to, and its gfid."""

    fd: int
    gfid: bytes
    flags: int


@dataclass(slots=True)
class OpenDir:
    """An open directory; `names` is the sorted snapshot that readdir cookies index into."""

    fd: int
    gfid: bytes
    names: list[bytes] | None = None


def _pwrite_all(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def _sync(fd: int, datasync: bool) -> None:
    if datasync:
        os.fdatasync(fd)
    else:
        os.fsync(fd)


class Posix(Translator):
    """The storage translator at the bottom of a brick graph.

    Invariants: handles (fh) are small ints unique for the brick's lifetime, each mapping to
    one open os fd; an unknown fh is EBADF. xattrop is atomic per gfid within this process (a
    trio.Lock per gfid, held across the read-modify-write and dropped when unused).
    """

    type_name = "storage/posix"
    options_table = (
        Option(
            "directory",
            Path(),
            required=True,
            help="The directory this brick serves; it must exist and support trusted.* xattrs.",
        ),
        Option(
            "o-direct",
            Bool(),
            "off",
            help="Accepted for compatibility with GlusterFS 2.0; has no effect "
            "(data files are opened without O_DIRECT).",
        ),
        Option(
            "export-statfs-size",
            Bool(),
            "on",
            help="Report the brick's block counts in statfs; off reports zero blocks.",
        ),
        Option(
            "mandate-attribute",
            Bool(),
            "on",
            help="Accepted for compatibility; the brick always requires xattr support "
            "and refuses to start without it.",
        ),
        Option(
            "background-unlink",
            Bool(),
            "off",
            help="Accepted for compatibility; has no effect (unlink is immediate; open "
            "files keep their data until released).",
        ),
        Option(
            "span-devices",
            Int(min=0),
            "0",
            help="Accepted for compatibility; has no effect (the brick serves one directory).",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self.tree = HandleTree(options["directory"])
        self.ops = BrickOps(self.tree, options.get("export-statfs-size", True))
        self._files: dict[int, OpenFile] = {}
        self._dirs: dict[int, OpenDir] = {}
        self._fh_counter = itertools.count(1)
        self._xattrop_locks: dict[bytes, trio.Lock] = {}

    async def start(self, nursery: trio.Nursery) -> None:
        self.tree.open()
        log.info("brick %s serves %s", self.name, self.tree.directory)
        # A local disk is up as soon as it is open; parents (replicate) count on hearing it.
        self.emit(Event.CHILD_UP)

    async def stop(self) -> None:
        for handle in [*self._files.values(), *self._dirs.values()]:
            os.close(handle.fd)
        self._files.clear()
        self._dirs.clear()
        self.tree.close()
        log.info("brick %s stopped", self.name)

    def _file(self, fh: int) -> OpenFile:
        try:
            return self._files[fh]
        except KeyError:
            raise error(errno.EBADF, f"no open file with handle {fh}") from None

    def _dir(self, fh: int) -> OpenDir:
        try:
            return self._dirs[fh]
        except KeyError:
            raise error(errno.EBADF, f"no open directory with handle {fh}") from None

    # --- inode fops -------------------------------------------------------------------------

    async def lookup(
        self, parent: bytes, name: bytes, xdata: dict[str, Any] | None = None
    ) -> tuple[Iatt, dict[str, Any]]:
        return await run_blocking(self.ops.lookup, parent, name, xdata)

    async def stat(self, gfid: bytes) -> Iatt:
        return await run_blocking(self.ops.stat, gfid)

    async def fstat(self, fh: int) -> Iatt:
        f = self._file(fh)
        return await run_blocking(self.ops.fstat, f.gfid, f.fd)

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        fd = None
        if fh is not None:
            fd = self._dirs[fh].fd if fh in self._dirs else self._file(fh).fd
        return await run_blocking(self.ops.setattr, gfid, attr, fd)

    async def readlink(self, gfid: bytes) -> bytes:
        return await run_blocking(self.ops.readlink, gfid)

    async def statfs(self, gfid: bytes) -> StatVfs:
        return await run_blocking(self.ops.statfs)

    # --- entry fops -------------------------------------------------------------------------

    async def mknod(self, parent, name, mode, rdev, uid, gid, gfid) -> Iatt:
        return await run_blocking(self.ops.mknod, parent, name, mode, rdev, uid, gid, gfid)

    async def mkdir(self, parent, name, mode, uid, gid, gfid) -> Iatt:
        return await run_blocking(self.ops.mkdir, parent, name, mode, uid, gid, gfid)

    async def symlink(self, parent, name, target, uid, gid, gfid) -> Iatt:
        return await run_blocking(self.ops.symlink, parent, name, target, uid, gid, gfid)

    async def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        fd, iatt = await run_blocking(self.ops.create, parent, name, flags, mode, uid, gid, gfid)
        return self._add_file(fd, gfid, flags), iatt

    async def link(self, gfid: bytes, parent: bytes, name: bytes) -> Iatt:
        return await run_blocking(self.ops.link, gfid, parent, name)

    async def unlink(self, parent: bytes, name: bytes) -> None:
        await run_blocking(self.ops.unlink, parent, name)

    async def rmdir(self, parent: bytes, name: bytes) -> None:
        await run_blocking(self.ops.rmdir, parent, name)

    async def rename(
        self, oldparent: bytes, oldname: bytes, newparent: bytes, newname: bytes, flags: int = 0
    ) -> None:
        await run_blocking(self.ops.rename, oldparent, oldname, newparent, newname, flags)

    # --- file fops --------------------------------------------------------------------------

    def _add_file(self, fd: int, gfid: bytes, flags: int) -> int:
        fh = next(self._fh_counter)
        self._files[fh] = OpenFile(fd, gfid, flags)
        return fh

    async def open(self, gfid: bytes, flags: int) -> int:
        fd = await run_blocking(self.ops.open, gfid, flags)
        return self._add_file(fd, gfid, flags)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or size > MAX_READ:
            raise error(errno.EINVAL, f"read of {size} bytes at {offset}")
        return await run_blocking(os.pread, self._file(fh).fd, size, offset)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        if offset < 0:
            raise error(errno.EINVAL, "negative offset")
        return await run_blocking(_pwrite_all, self._file(fh).fd, data, offset)

    async def flush(self, fh: int, lk_owner: bytes) -> None:
        self._file(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        await run_blocking(_sync, self._file(fh).fd, datasync)

    async def release(self, fh: int) -> None:
        f = self._file(fh)
        del self._files[fh]
        await run_blocking(os.close, f.fd)

    # --- directory fops ---------------------------------------------------------------------

    async def opendir(self, gfid: bytes) -> int:
        fd = await run_blocking(self.ops.opendir, gfid)
        fh = next(self._fh_counter)
        self._dirs[fh] = OpenDir(fd, gfid)
        return fh

    async def readdir(self, fh: int, offset: int, count: int) -> list[DirEntry]:
        d = self._dir(fh)
        if offset < 0 or count < 0:
            raise error(errno.EINVAL, "negative offset or count")
        if offset == 0 or d.names is None:
            d.names = await run_blocking(self.ops.list_names, d.gfid, d.fd)
        return await run_blocking(self.ops.readdir, d.gfid, d.fd, d.names, offset, count)

    async def releasedir(self, fh: int) -> None:
        d = self._dir(fh)
        del self._dirs[fh]
        await run_blocking(os.close, d.fd)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await run_blocking(_sync, self._dir(fh).fd, datasync)

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, gfid: bytes, name: str) -> bytes:
        return await run_blocking(self.ops.getxattr, gfid, name)

    async def listxattr(self, gfid: bytes) -> list[str]:
        return await run_blocking(self.ops.listxattr, gfid)

    async def setxattr(self, gfid: bytes, name: str, value: bytes, flags: int = 0) -> None:
        await run_blocking(self.ops.setxattr, gfid, name, value, flags)

    async def removexattr(self, gfid: bytes, name: str) -> None:
        await run_blocking(self.ops.removexattr, gfid, name)

    async def xattrop(self, gfid: bytes, op: str, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        if op != "add-array":
            raise error(errno.EINVAL, f"unknown xattrop {op!r}")
        lock = self._xattrop_locks.setdefault(gfid, trio.Lock())
        try:
            async with lock:
                return await run_blocking(self.ops.add_array, gfid, xattrs)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                if self._xattrop_locks.get(gfid) is lock:
                    del self._xattrop_locks[gfid]
