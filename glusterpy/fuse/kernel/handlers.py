"""Request handlers: decode one kernel request, call the file system, encode its answer.

The file system is the binding-neutral bridge (glusterpy.fuse.bridge) or anything with the same
method names. A handler returns the reply payload (bytes, a list of buffers, or None for an
empty reply) and lets OSError through; the session turns errors into error replies. Any number
of handlers may run at once.

The one piece of state kept here is which POSIX lock owners took locks through each open file
and have not closed it since (`_lock_owners`). A process's own locks go with the FLUSH of its
close, which names it; an OFD lock's owner is the open file itself, which no FLUSH names, and
the kernel sends no unlock for it. So whatever owners are left when the file is released are
OFD owners, and we unlock them before the release.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from glusterpy.fuse.kernel import abi
from glusterpy.fuse.kernel.abi import Op
from glusterpy.xlator import Flock, SetAttr

log = logging.getLogger(__name__)

# Seconds to wait for the bricks to withdraw an interrupted lock wait before giving up on it.
WITHDRAW_TIMEOUT = 10.0


class Request:
    """One decoded request: the in-header's fields and the bytes after it.

    For WRITE, `body` holds only fuse_write_in and `data` the payload, so that the payload is
    copied out of the session's read buffer once.
    """

    __slots__ = ("opcode", "unique", "nodeid", "uid", "gid", "pid", "body", "data")

    def __init__(self, opcode, unique, nodeid, uid, gid, pid, body, data=b""):
        self.opcode = opcode
        self.unique = unique
        self.nodeid = nodeid
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.body = body
        self.data = data

    def __repr__(self) -> str:
        name = abi.OP_NAMES.get(self.opcode, str(self.opcode))
        return f"<{name} unique={self.unique} node={self.nodeid}>"


Payload = bytes | list[bytes] | None
Handler = Callable[[Request], Awaitable[Payload]]


def _entry(entry: Any) -> bytes:
    return abi.pack_entry_out(
        entry.ino, entry.generation, entry.attr, entry.entry_timeout, entry.attr_timeout
    )


def _attr(ino: int, answer: Any) -> bytes:
    return abi.pack_attr_out(ino, answer.attr, answer.attr_timeout)


def _open_flags(handle: Any) -> int:
    flags = abi.FOPEN_DIRECT_IO if getattr(handle, "direct_io", False) else 0
    if getattr(handle, "keep_cache", False):
        flags |= abi.FOPEN_KEEP_CACHE
    return flags


def _xattr_reply(value: bytes, size: int) -> bytes:
    # Size 0 asks how big the value is; a value longer than the caller's buffer is ERANGE.
    if size == 0:
        return abi.GETXATTR_OUT.pack(len(value), 0)
    if len(value) > size:
        raise OSError(errno.ERANGE, "extended attribute larger than the buffer")
    return value


class Handlers:
    """The table from opcode to handler for one file system; see the module docstring."""

    def __init__(self, fs: Any):
        self.fs = fs
        self._lock_owners: dict[int, set[int]] = {}
        self.table: dict[int, Handler] = {
            Op.LOOKUP: self.lookup, Op.GETATTR: self.getattr, Op.SETATTR: self.setattr,
            Op.READLINK: self.readlink, Op.SYMLINK: self.symlink, Op.MKNOD: self.mknod,
            Op.MKDIR: self.mkdir, Op.UNLINK: self.unlink, Op.RMDIR: self.rmdir,
            Op.RENAME: self.rename, Op.RENAME2: self.rename, Op.LINK: self.link,
            Op.OPEN: self.open, Op.READ: self.read, Op.WRITE: self.write,
            Op.STATFS: self.statfs, Op.RELEASE: self.release, Op.FSYNC: self.fsync,
            Op.SETXATTR: self.setxattr, Op.GETXATTR: self.getxattr,
            Op.LISTXATTR: self.listxattr, Op.REMOVEXATTR: self.removexattr,
            Op.FLUSH: self.flush, Op.OPENDIR: self.opendir, Op.READDIR: self.readdir,
            Op.READDIRPLUS: self.readdir, Op.RELEASEDIR: self.releasedir,
            Op.FSYNCDIR: self.fsyncdir, Op.CREATE: self.create,
        }  # fmt: skip
        if hasattr(fs, "getlk") and hasattr(fs, "setlk"):
            self.table.update({Op.GETLK: self.getlk, Op.SETLK: self.setlk, Op.SETLKW: self.setlk})

    # --- inodes -----------------------------------------------------------------------------

    async def lookup(self, req: Request) -> Payload:
        name, _ = abi.cstring(req.body)
        try:
            return _entry(await self.fs.lookup(req.nodeid, name))
        except OSError as exc:
            negative = getattr(self.fs, "negative_timeout", 0.0)
            if exc.errno != errno.ENOENT or not negative > 0:
                raise
        # Node 0 with a timeout: the kernel remembers for that long that the name is absent.
        seconds, nanoseconds = abi.split_seconds(negative)
        return abi.ENTRY_OUT.pack(0, 0, seconds, 0, nanoseconds, 0, *[0] * 16)

    async def getattr(self, req: Request) -> Payload:
        flags, _, fh = abi.GETATTR_IN.unpack_from(req.body)
        fh = fh if flags & abi.GETATTR_FH else None
        return _attr(req.nodeid, await self.fs.getattr(req.nodeid, fh))

    async def setattr(self, req: Request) -> Payload:
        fields = abi.SETATTR_IN.unpack_from(req.body)
        valid, _, fh, size, _, atime, mtime, _, atime_ns, mtime_ns, _, mode, _, uid, gid, _ = fields
        now = time.time_ns()
        attr = SetAttr(
            mode=mode if valid & abi.FATTR_MODE else None,
            uid=uid if valid & abi.FATTR_UID else None,
            gid=gid if valid & abi.FATTR_GID else None,
            size=size if valid & abi.FATTR_SIZE else None,
            atime_ns=_time(valid, abi.FATTR_ATIME, abi.FATTR_ATIME_NOW, atime, atime_ns, now),
            mtime_ns=_time(valid, abi.FATTR_MTIME, abi.FATTR_MTIME_NOW, mtime, mtime_ns, now),
        )
        fh = fh if valid & abi.FATTR_FH else None
        return _attr(req.nodeid, await self.fs.setattr(req.nodeid, attr, fh))

    async def readlink(self, req: Request) -> Payload:
        return await self.fs.readlink(req.nodeid)

    async def statfs(self, req: Request) -> Payload:
        s = await self.fs.statfs(req.nodeid)
        return abi.STATFS_OUT.pack(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namemax, s.frsize
        )

    # --- entries ----------------------------------------------------------------------------

    async def mknod(self, req: Request) -> Payload:
        mode, rdev, _, _ = abi.MKNOD_IN.unpack_from(req.body)
        name, _ = abi.cstring(req.body, abi.MKNOD_IN.size)
        entry = await self.fs.mknod(req.nodeid, name, mode, rdev, req.uid, req.gid)
        return _entry(entry)

    async def mkdir(self, req: Request) -> Payload:
        mode, _ = abi.MKDIR_IN.unpack_from(req.body)
        name, _ = abi.cstring(req.body, abi.MKDIR_IN.size)
        return _entry(await self.fs.mkdir(req.nodeid, name, mode, req.uid, req.gid))

    async def symlink(self, req: Request) -> Payload:
        name, end = abi.cstring(req.body)
        target, _ = abi.cstring(req.body, end)
        return _entry(await self.fs.symlink(req.nodeid, name, target, req.uid, req.gid))

    async def link(self, req: Request) -> Payload:
        (ino,) = abi.LINK_IN.unpack_from(req.body)
        name, _ = abi.cstring(req.body, abi.LINK_IN.size)
        return _entry(await self.fs.link(ino, req.nodeid, name))

    async def unlink(self, req: Request) -> Payload:
        await self.fs.unlink(req.nodeid, abi.cstring(req.body)[0])

    async def rmdir(self, req: Request) -> Payload:
        await self.fs.rmdir(req.nodeid, abi.cstring(req.body)[0])

    async def rename(self, req: Request) -> Payload:
        if req.opcode == Op.RENAME2:
            new_parent, flags, _ = abi.RENAME2_IN.unpack_from(req.body)
            start = abi.RENAME2_IN.size
        else:
            (new_parent,), flags, start = abi.RENAME_IN.unpack_from(req.body), 0, abi.RENAME_IN.size
        name, end = abi.cstring(req.body, start)
        new_name, _ = abi.cstring(req.body, end)
        await self.fs.rename(req.nodeid, name, new_parent, new_name, flags)

    # --- files ------------------------------------------------------------------------------

    async def open(self, req: Request) -> Payload:
        flags, _ = abi.OPEN_IN.unpack_from(req.body)
        handle = await self.fs.open(req.nodeid, flags)
        return abi.OPEN_OUT.pack(handle.fh, _open_flags(handle), 0)

    async def create(self, req: Request) -> Payload:
        flags, mode, _, _ = abi.CREATE_IN.unpack_from(req.body)
        name, _ = abi.cstring(req.body, abi.CREATE_IN.size)
        handle, entry = await self.fs.create(req.nodeid, name, flags, mode, req.uid, req.gid)
        return [_entry(entry), abi.OPEN_OUT.pack(handle.fh, _open_flags(handle), 0)]

    async def read(self, req: Request) -> Payload:
        fh, offset, size, _, _, _, _ = abi.READ_IN.unpack_from(req.body)
        return await self.fs.read(fh, offset, size)

    async def write(self, req: Request) -> Payload:
        fh, offset, _, _, _, _, _ = abi.WRITE_IN.unpack_from(req.body)
        written = await self.fs.write(fh, offset, req.data)
        return abi.WRITE_OUT.pack(written, 0)

    async def flush(self, req: Request) -> Payload:
        fh, _, _, lock_owner = abi.FLUSH_IN.unpack_from(req.body)
        self._lock_owners.get(fh, set()).discard(lock_owner)
        await self.fs.flush(fh, lock_owner)

    async def release(self, req: Request) -> Payload:
        fh, _, release_flags, lock_owner = abi.RELEASE_IN.unpack_from(req.body)
        if release_flags & abi.RELEASE_FLOCK_UNLOCK and Op.SETLK in self.table:
            # The kernel never sends the flock unlock of a last close; it asks us here.
            await self._unlock(fh, lock_owner, req.pid, flock=True)
        for owner in self._lock_owners.pop(fh, ()):
            await self._unlock(fh, owner, req.pid, flock=False)
        await self.fs.release(fh)

    async def _unlock(self, fh: int, owner: int, pid: int, flock: bool) -> None:
        unlock = Flock(fcntl.F_UNLCK, 0, 0, pid, _owner(owner), flock=flock)
        try:
            await self.fs.setlk(fh, owner, unlock, False)
        except OSError as exc:
            log.debug("unlock of owner %#x on release of fh %d failed: %s", owner, fh, exc)

    async def fsync(self, req: Request) -> Payload:
        fh, flags, _ = abi.FSYNC_IN.unpack_from(req.body)
        await self.fs.fsync(fh, bool(flags & abi.FSYNC_FDATASYNC))

    # --- directories ------------------------------------------------------------------------

    async def opendir(self, req: Request) -> Payload:
        fh = await self.fs.opendir(req.nodeid)
        return abi.OPEN_OUT.pack(fh, 0, 0)

    async def readdir(self, req: Request) -> Payload:
        fh, offset, size, _, _, _, _ = abi.READ_IN.unpack_from(req.body)
        entries = await self.fs.readdir(fh, offset)
        plus = req.opcode == Op.READDIRPLUS
        records: list[bytes] = []
        used = 0
        for item in entries:
            need = abi.dirent_size(item.name) + (abi.ENTRY_OUT.size if plus else 0)
            if used + need > size:
                break
            entry = item.entry
            dirent = abi.pack_dirent(entry.ino, item.offset, entry.attr.mode, item.name)
            if plus:
                records.append(_entry(entry))
                if getattr(item, "counted", True) and item.name not in (b".", b".."):
                    # The kernel takes a lookup reference for every entry it receives here.
                    self.fs.remember(entry)
            records.append(dirent)
            used += need
        return records

    async def releasedir(self, req: Request) -> Payload:
        fh, _, _, _ = abi.RELEASE_IN.unpack_from(req.body)
        await self.fs.releasedir(fh)

    async def fsyncdir(self, req: Request) -> Payload:
        fh, flags, _ = abi.FSYNC_IN.unpack_from(req.body)
        await self.fs.fsyncdir(fh, bool(flags & abi.FSYNC_FDATASYNC))

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, req: Request) -> Payload:
        size, _ = abi.GETXATTR_IN.unpack_from(req.body)
        name, _ = abi.cstring(req.body, abi.GETXATTR_IN.size)
        return _xattr_reply(await self.fs.getxattr(req.nodeid, name), size)

    async def listxattr(self, req: Request) -> Payload:
        size, _ = abi.GETXATTR_IN.unpack_from(req.body)
        names = await self.fs.listxattr(req.nodeid)
        return _xattr_reply(b"".join(name + b"\0" for name in names), size)

    async def setxattr(self, req: Request) -> Payload:
        size, flags = abi.SETXATTR_IN.unpack_from(req.body)
        name, end = abi.cstring(req.body, abi.SETXATTR_IN.size)
        value = bytes(req.body[end : end + size])
        await self.fs.setxattr(req.nodeid, name, value, flags)

    async def removexattr(self, req: Request) -> Payload:
        await self.fs.removexattr(req.nodeid, abi.cstring(req.body)[0])

    # --- locks ------------------------------------------------------------------------------

    async def getlk(self, req: Request) -> Payload:
        fh, owner, lock = _decode_lock(req.body)
        found = await self.fs.getlk(fh, owner, lock)
        if found.type == fcntl.F_UNLCK:
            return abi.LK_OUT.pack(0, 0, fcntl.F_UNLCK, 0)
        end = abi.OFFSET_MAX if found.length == 0 else found.start + found.length - 1
        return abi.LK_OUT.pack(found.start, end, found.type, found.pid)

    async def setlk(self, req: Request) -> Payload:
        fh, owner, lock = _decode_lock(req.body)
        wait = req.opcode == Op.SETLKW
        try:
            await self.fs.setlk(fh, owner, lock, wait)
        except trio.Cancelled:
            if wait and hasattr(self.fs, "cancel_lock"):
                await self._withdraw(fh, owner, lock)
            raise
        if not lock.flock and lock.type != fcntl.F_UNLCK:
            self._lock_owners.setdefault(fh, set()).add(owner)

    async def _withdraw(self, fh: int, owner: int, lock: Flock) -> None:
        """Take back an interrupted wait from the bricks, or they grant it later to nobody."""
        with trio.move_on_after(WITHDRAW_TIMEOUT, shield=True):
            try:
                await self.fs.cancel_lock(fh, owner, lock)
            except OSError as exc:
                log.warning("withdrawing an interrupted lock wait on fh %d failed: %s", fh, exc)


def _time(valid: int, bit: int, now_bit: int, sec: int, nsec: int, now: int) -> int | None:
    if valid & now_bit:
        return now
    if valid & bit:
        return sec * 10**9 + nsec
    return None


def _owner(lock_owner: int) -> bytes:
    return lock_owner.to_bytes(8, "little")


def _decode_lock(body: bytes) -> tuple[int, int, Flock]:
    fh, owner, start, end, kind, pid, lk_flags, _ = abi.LK_IN.unpack_from(body)
    length = 0 if end >= abi.OFFSET_MAX else end - start + 1
    lock = Flock(kind, start, length, pid, _owner(owner), flock=bool(lk_flags & abi.LK_FLOCK))
    return fh, owner, lock
