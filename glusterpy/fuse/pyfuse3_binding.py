"""The pyfuse3 binding: pyfuse3's request handlers, each a thin call into the bridge.

Everything about inodes, handles and errors lives in `glusterpy.fuse.bridge`; this module only
converts pyfuse3's argument and answer types and guards its main loop.

Invariants:
- No handler lets an exception other than FUSEError reach pyfuse3 (its main loop ends on the
  first one and the mount hangs): OSError becomes its errno, anything else EIO plus one ERROR
  log line with the traceback. trio's Cancelled passes through (it is not an Exception).
- A readdirplus entry is counted in the bridge only after `readdir_reply` accepted it.
- The mount is unmounted only after a clean end of the main loop; after a crash it stays, dead,
  so that programs get an error instead of writing into the directory underneath.
"""

from __future__ import annotations

import errno
import functools
import logging
import signal
import stat
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from glusterpy.fuse.bridge import (
    ROOT_INO,
    Attr,
    Bridge,
    Entry,
    MountConfig,
    MountError,
    OpenFile,
    errno_of,
)
from glusterpy.xlator import Iatt, SetAttr

log = logging.getLogger(__name__)

EXTRA_OPTIONS: frozenset[str] = frozenset()


def fuse_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn what a handler raises into FUSEError, the only exception pyfuse3 survives."""

    @functools.wraps(fn)
    async def handler(*args: Any) -> Any:
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            raise pyfuse3.FUSEError(errno_of(e)) from None
        except Exception:
            log.exception("%s failed unexpectedly; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


def entry_attributes(iatt: Iatt, attr_timeout: float, entry_timeout: float = 0.0):
    out = pyfuse3.EntryAttributes()
    out.st_ino = iatt.ino
    out.generation = 0
    out.st_mode = iatt.mode
    out.st_nlink = iatt.nlink
    out.st_uid = iatt.uid
    out.st_gid = iatt.gid
    out.st_rdev = iatt.rdev
    out.st_size = iatt.size
    out.st_blksize = iatt.blksize
    out.st_blocks = iatt.blocks
    out.st_atime_ns = iatt.atime_ns
    out.st_mtime_ns = iatt.mtime_ns
    out.st_ctime_ns = iatt.ctime_ns
    out.attr_timeout = attr_timeout
    out.entry_timeout = entry_timeout
    return out


def _from_entry(entry: Entry):
    out = entry_attributes(entry.attr, entry.attr_timeout, entry.entry_timeout)
    out.generation = entry.generation
    return out


def _from_attr(attr: Attr):
    return entry_attributes(attr.attr, attr.attr_timeout)


def _negative_entry(timeout: float):
    """An answer that makes the kernel remember for `timeout` seconds that a name is absent."""
    out = pyfuse3.EntryAttributes()
    out.st_ino = 0
    out.entry_timeout = timeout
    return out


def _file_info(opened: OpenFile):
    return pyfuse3.FileInfo(fh=opened.fh, direct_io=opened.direct_io, keep_cache=opened.keep_cache)


def _set_attr(attr, fields) -> SetAttr:
    return SetAttr(
        mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
        uid=attr.st_uid if fields.update_uid else None,
        gid=attr.st_gid if fields.update_gid else None,
        size=attr.st_size if fields.update_size else None,
        atime_ns=attr.st_atime_ns if fields.update_atime else None,
        mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
    )


class Operations(pyfuse3.Operations):
    """pyfuse3's handlers on top of one Bridge; no state of its own."""

    enable_writeback_cache = False
    supports_dot_lookup = False
    enable_acl = False

    def __init__(self, bridge: Bridge):
        super().__init__()
        self.bridge = bridge

    def init(self) -> None:
        log.debug("FUSE session initialised")

    async def forget(self, inode_list) -> None:
        try:
            self.bridge.forget(list(inode_list))
        except Exception:
            log.exception("forget failed")

    @fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        try:
            entry = await self.bridge.lookup(parent_inode, name)
        except OSError as e:
            if e.errno == errno.ENOENT and self.bridge.negative_timeout > 0:
                return _negative_entry(self.bridge.negative_timeout)
            raise
        return _from_entry(entry)

    @fuse_errors
    async def getattr(self, inode, ctx=None):
        return _from_attr(await self.bridge.getattr(inode))

    @fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        return _from_attr(await self.bridge.setattr(inode, _set_attr(attr, fields), fh))

    @fuse_errors
    async def readlink(self, inode, ctx):
        return await self.bridge.readlink(inode)

    @fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        entry = await self.bridge.mknod(parent_inode, name, mode, rdev, ctx.uid, ctx.gid)
        return _from_entry(entry)

    @fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        return _from_entry(await self.bridge.mkdir(parent_inode, name, mode, ctx.uid, ctx.gid))

    @fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        entry = await self.bridge.symlink(parent_inode, name, target, ctx.uid, ctx.gid)
        return _from_entry(entry)

    @fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        return _from_entry(await self.bridge.link(inode, new_parent_inode, new_name))

    @fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        await self.bridge.unlink(parent_inode, name)

    @fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        await self.bridge.rmdir(parent_inode, name)

    @fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self.bridge.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @fuse_errors
    async def open(self, inode, flags, ctx):
        return _file_info(await self.bridge.open(inode, flags))

    @fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        opened, entry = await self.bridge.create(parent_inode, name, flags, mode, ctx.uid, ctx.gid)
        return _file_info(opened), _from_entry(entry)

    @fuse_errors
    async def read(self, fh, off, size):
        return await self.bridge.read(fh, off, size)

    @fuse_errors
    async def write(self, fh, off, buf):
        return await self.bridge.write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh):
        # pyfuse3 does not pass the lock owner; locks never reach the bricks through it.
        await self.bridge.flush(fh, 0)

    @fuse_errors
    async def release(self, fh):
        await self.bridge.release(fh)

    @fuse_errors
    async def fsync(self, fh, datasync):
        await self.bridge.fsync(fh, bool(datasync))

    @fuse_errors
    async def opendir(self, inode, ctx):
        return await self.bridge.opendir(inode)

    @fuse_errors
    async def readdir(self, fh, start_id, token):
        offset = start_id
        while True:
            items = await self.bridge.readdir(fh, offset)
            if not items:
                return
            for item in items:
                attrs = _from_entry(item.entry)
                if not pyfuse3.readdir_reply(token, item.name, attrs, item.offset):
                    return
                if item.counted:
                    self.bridge.remember(item.entry)
                offset = item.offset

    @fuse_errors
    async def releasedir(self, fh):
        await self.bridge.releasedir(fh)

    @fuse_errors
    async def fsyncdir(self, fh, datasync):
        await self.bridge.fsyncdir(fh, bool(datasync))

    @fuse_errors
    async def statfs(self, ctx):
        vfs = await self.bridge.statfs(ROOT_INO)
        out = pyfuse3.StatvfsData()
        out.f_bsize = vfs.bsize
        out.f_frsize = vfs.frsize
        out.f_blocks = vfs.blocks
        out.f_bfree = vfs.bfree
        out.f_bavail = vfs.bavail
        out.f_files = vfs.files
        out.f_ffree = vfs.ffree
        out.f_favail = vfs.favail
        out.f_namemax = vfs.namemax
        return out

    @fuse_errors
    async def getxattr(self, inode, name, ctx):
        return await self.bridge.getxattr(inode, name)

    @fuse_errors
    async def listxattr(self, inode, ctx):
        return await self.bridge.listxattr(inode)

    @fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        # pyfuse3 checks XATTR_CREATE/XATTR_REPLACE itself and passes no flags.
        await self.bridge.setxattr(inode, name, value, 0)

    @fuse_errors
    async def removexattr(self, inode, name, ctx):
        await self.bridge.removexattr(inode, name)


def mount_options(config: MountConfig) -> set[str]:
    options = {"default_permissions", f"fsname={config.fsname}", f"subtype={config.subtype}"}
    if config.allow_other:
        options.add("allow_other")
    return options


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("got %s; unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


async def serve(bridge: Bridge, config: MountConfig, ready: Callable[[], None]) -> None:
    """Mount, answer requests until unmounted or signalled, unmount; see MountConfig."""
    if config.device != "/dev/fuse":
        raise MountError(f"the pyfuse3 binding always uses /dev/fuse, not {config.device}")
    try:
        pyfuse3.init(Operations(bridge), config.mountpoint, mount_options(config))
    except RuntimeError as e:
        raise MountError(f"mounting {config.fsname} on {config.mountpoint} failed: {e}") from None

    clean = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signal)
            ready()
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
        clean = True
    finally:
        pyfuse3.close(unmount=clean)
        log.info(
            "%s on %s is %s",
            config.fsname,
            config.mountpoint,
            "unmounted" if clean else "left mounted (dead) after an error",
        )
