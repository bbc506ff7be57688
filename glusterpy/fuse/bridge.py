"""The bridge from FUSE requests onto the translator graph, shared by every FUSE binding.

A binding (pyfuse3, or our own kernel session) decodes requests, calls the bridge, and encodes
the answers; everything in between lives here: which gfid a FUSE nodeid names, how many lookups
the kernel holds on it, which translator handle an open file or directory uses, the readdir
cookies, the cache timeouts handed to the kernel, and which xattrs users may see.

Invariants:
- A nodeid is the gfid's inode number (`Iatt.ino`, 1 for the root). `_inodes` maps a nodeid to
  its gfid while the kernel holds lookups on it (count > 0); the root is always there. Every
  reply that hands the kernel a new entry (lookup, create, mknod, mkdir, symlink, link, and each
  readdirplus entry through `remember`) adds one; `forget` takes them away.
- The tables change only between awaits (trio runs one task at a time), so each update is
  atomic; after an await a method re-reads the tables instead of trusting what it read before.
- `forget` and `remember` are synchronous and never raise. Every other method raises only
  OSError with an errno; anything else is a bug that the binding answers with EIO.
- New objects in a set-group-ID directory take the directory's group (and new directories the
  bit), as the kernel does for local file systems; the directory's mode and group are the
  last ones seen for it, so no extra request is made.
- readdir cookies: 1 and 2 follow "." and ".."; a translator cookie c becomes c + 2. They stay
  valid for the open directory however it changes (the translator's cookies do).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import math
import os
import stat
import time
import uuid
from dataclasses import dataclass, field

from glusterpy.xlator import (
    F_CANCELLK,
    ROOT_GFID,
    DirEntry,
    Flock,
    Iatt,
    SetAttr,
    StatVfs,
    Translator,
    error,
)

log = logging.getLogger(__name__)

ROOT_INO = 1
# Entries asked of the translator per readdir; a kernel reply holds only a few dozen, so the
# rest are kept on the handle and served from there.
READDIR_BATCH = 256
DOT_COOKIE = 1
DOTDOT_COOKIE = 2
NAME_MAX = 255
RENAME_NOREPLACE = 1
# The bricks keep their own state in these; users may neither see nor change them.
INTERNAL_XATTR_PREFIXES = (
    b"trusted.gfid",
    b"trusted.afr.",
    b"trusted.glusterfs.",
    b"trusted.glusterpy.",
)


class MountError(Exception):
    """A mount that could not be made; the message is one line naming the reason."""


@dataclass(slots=True)
class MountConfig:
    """What a binding needs to mount a volume.

    A binding module offers `EXTRA_OPTIONS` (the `-o` keys of its own it accepts, found in
    `extra`) and `async serve(bridge, config, ready)`: it mounts on `mountpoint`, calls `ready()`
    once the mount is in place, answers requests until the mount is unmounted or the process
    gets SIGTERM/SIGINT (then it unmounts), and raises MountError when it cannot mount.
    """

    mountpoint: str
    volume: str
    device: str = "/dev/fuse"
    allow_other: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def fsname(self) -> str:
        return f"glusterpy:{self.volume}"

    subtype = "glusterpy"


def errno_of(exc: BaseException) -> int:
    """The errno to answer for `exc`: an OSError's own, EIO for anything else."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc.errno
    return errno.EIO


CAPABILITY_XATTR = b"security.capability"


def is_internal_xattr(name: bytes) -> bool:
    return name.startswith(INTERNAL_XATTR_PREFIXES)


def owner_bytes(owner: int) -> bytes:
    """The kernel's 64-bit lock owner as the bytes the translators carry."""
    return (owner & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big")


@dataclass(slots=True)
class Entry:
    """A name's answer for the kernel: nodeid, generation, attributes and cache times."""

    ino: int
    generation: int
    attr: Iatt
    entry_timeout: float
    attr_timeout: float


@dataclass(slots=True)
class Attr:
    """An object's attributes for the kernel, and how long it may cache them."""

    attr: Iatt
    attr_timeout: float


@dataclass(slots=True)
class OpenFile:
    """An open file's handle for the kernel; the page cache is dropped on open by default,
    so that a reader sees what other clients wrote before (close-to-open consistency)."""

    fh: int
    direct_io: bool = False
    keep_cache: bool = False


@dataclass(slots=True)
class DirItem:
    """One readdir answer; `offset` is the cookie of the next item.

    `entry` has not been counted: the binding calls `Bridge.remember(entry)` for each item it
    actually puts into a readdirplus reply, except "." and ".." (`counted` is False for them),
    which the kernel never counts.
    """

    name: bytes
    offset: int
    entry: Entry
    counted: bool = True


@dataclass(slots=True)
class _Inode:
    """A nodeid the kernel holds; `mode` and `gid` are the last attributes seen for it."""

    gfid: bytes
    nlookup: int
    mode: int = 0
    gid: int = 0
    # Until when (time.monotonic) the object is known to carry no file capabilities.
    no_caps_until: float = -math.inf


@dataclass(slots=True)
class _Handle:
    """An open file or directory: the translator's handle and what it was opened on.

    For directories, `batch` keeps the last entries the translator returned and `batch_from`
    the translator cookie they were asked from, so that the kernel's small readdir requests
    are served without asking again.
    """

    xl_fh: int
    ino: int
    gfid: bytes
    is_dir: bool
    batch: list[DirEntry] = field(default_factory=list)
    batch_from: int = -1


class Bridge:
    """FUSE-shaped operations on top of translator `top`; see the module docstring."""

    def __init__(
        self,
        top: Translator,
        *,
        entry_timeout: float = 1.0,
        attr_timeout: float = 1.0,
        negative_timeout: float = 0.0,
    ):
        self.top = top
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        self.negative_timeout = negative_timeout
        self._inodes: dict[int, _Inode] = {ROOT_INO: _Inode(ROOT_GFID, 1)}
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1

    # --- the inode table --------------------------------------------------------------------

    def gfid(self, ino: int) -> bytes:
        """The gfid of nodeid `ino`; ESTALE when the kernel has forgotten it."""
        inode = self._inodes.get(ino)
        if inode is None:
            raise error(errno.ESTALE, f"nodeid {ino} is not known")
        return inode.gfid

    def lookup_count(self, ino: int) -> int:
        inode = self._inodes.get(ino)
        return 0 if inode is None else inode.nlookup

    def _entry(self, iatt: Iatt) -> Entry:
        return Entry(iatt.ino, 0, iatt, self.entry_timeout, self.attr_timeout)

    def _count(self, iatt: Iatt) -> Entry:
        """Add one lookup on the object of `iatt` and give its entry."""
        ino = iatt.ino
        inode = self._inodes.get(ino)
        if inode is None:
            self._inodes[ino] = _Inode(iatt.gfid, 1, iatt.mode, iatt.gid)
        elif inode.gfid != iatt.gfid:
            log.error(
                "gfids %s and %s share inode number %d; refusing the second",
                uuid.UUID(bytes=inode.gfid),
                uuid.UUID(bytes=iatt.gfid),
                ino,
            )
            raise error(errno.EIO, "inode number collision")
        else:
            inode.nlookup += 1
            inode.mode, inode.gid = iatt.mode, iatt.gid
        return self._entry(iatt)

    def _seen(self, iatt: Iatt) -> Iatt:
        """Note fresh attributes of a nodeid the kernel holds."""
        inode = self._inodes.get(iatt.ino)
        if inode is not None and inode.gfid == iatt.gfid:
            inode.mode, inode.gid = iatt.mode, iatt.gid
        return iatt

    def _new_owner(self, parent: int, gid: int, mode: int, is_dir: bool) -> tuple[int, int]:
        """The group and mode of a new object in `parent`: set-group-ID directories pass on
        their group, and to new directories the bit itself."""
        inode = self._inodes.get(parent)
        if inode is None or not inode.mode & stat.S_ISGID:
            return gid, mode
        return inode.gid, (mode | stat.S_ISGID) if is_dir else mode

    def remember(self, entry: Entry) -> None:
        """Count one lookup for an entry the binding put into a readdirplus reply."""
        try:
            self._count(entry.attr)
        except Exception:
            log.exception("could not count a readdir entry")

    def forget(self, items: list[tuple[int, int]]) -> None:
        """The kernel dropped `nlookup` lookups on each nodeid; at 0 the nodeid is gone."""
        for ino, nlookup in items:
            try:
                self._forget_one(ino, nlookup)
            except Exception:
                log.exception("forget of nodeid %s failed", ino)

    def _forget_one(self, ino: int, nlookup: int) -> None:
        inode = self._inodes.get(ino)
        if inode is None:
            log.debug("forget of unknown nodeid %d", ino)
            return
        inode.nlookup -= nlookup
        if inode.nlookup <= 0 and ino != ROOT_INO:
            del self._inodes[ino]

    # --- open handles -----------------------------------------------------------------------

    def _add_handle(self, xl_fh: int, ino: int, gfid: bytes, is_dir: bool) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(xl_fh, ino, gfid, is_dir)
        return fh

    def _handle(self, fh: int, is_dir: bool) -> _Handle:
        handle = self._handles.get(fh)
        if handle is None or handle.is_dir != is_dir:
            raise error(errno.EBADF, f"no open {'directory' if is_dir else 'file'} {fh}")
        return handle

    def _open_file_of(self, ino: int) -> _Handle | None:
        for handle in self._handles.values():
            if handle.ino == ino and not handle.is_dir:
                return handle
        return None

    # --- inode requests ---------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: bytes) -> Entry:
        if name == b"." or (name == b".." and parent_ino == ROOT_INO):
            iatt = await self.top.stat(self.gfid(parent_ino))
            return self._count(iatt)
        if name == b"..":
            # Only NFS export asks for "..", and that support is not announced to the kernel.
            raise error(errno.ENOENT, "lookup of '..' is not supported")
        _check_name(name)
        iatt, _ = await self.top.lookup(self.gfid(parent_ino), name)
        return self._count(iatt)

    async def getattr(self, ino: int, fh: int | None = None) -> Attr:
        if fh is not None:
            iatt = await self.top.fstat(self._handle(fh, False).xl_fh)
            return Attr(self._seen(iatt), self.attr_timeout)
        try:
            iatt = await self.top.stat(self.gfid(ino))
        except OSError as e:
            # An unlinked file that is still open has no name left to find it by.
            handle = self._open_file_of(ino)
            if e.errno not in (errno.ENOENT, errno.ESTALE) or handle is None:
                raise
            iatt = await self.top.fstat(handle.xl_fh)
        return Attr(self._seen(iatt), self.attr_timeout)

    async def setattr(self, ino: int, attr: SetAttr, fh: int | None = None) -> Attr:
        xl_fh = None if fh is None else self._handle(fh, False).xl_fh
        kills_privileges = (attr.uid, attr.gid, attr.size) != (None, None, None)
        if kills_privileges and attr.mode is None:
            attr = dataclasses.replace(attr, mode=self._mode_without_privileges(ino))
        iatt = await self.top.setattr(self.gfid(ino), attr, xl_fh)
        return Attr(self._seen(iatt), self.attr_timeout)

    def _mode_without_privileges(self, ino: int) -> int | None:
        """The permission bits of `ino` without set-user-ID and set-group-ID (with group
        execute), or None when it has neither, by the last attributes seen.

        The kernel leaves clearing them on write, truncate and chown to the file system
        (libfuse turns on HANDLE_KILLPRIV), and the bricks change files as root, which keeps
        them; left alone, a user could change a set-ID program and keep its privileges. Unlike
        a local file system, this also clears them when root writes.
        """
        inode = self._inodes.get(ino)
        if inode is None or not stat.S_ISREG(inode.mode):
            return None
        mode = inode.mode
        group_exec = stat.S_ISGID | stat.S_IXGRP
        if not mode & stat.S_ISUID and mode & group_exec != group_exec:
            return None
        return stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID)

    async def readlink(self, ino: int) -> bytes:
        return await self.top.readlink(self.gfid(ino))

    async def statfs(self, ino: int = ROOT_INO) -> StatVfs:
        gfid = self._inodes[ino].gfid if ino in self._inodes else ROOT_GFID
        return await self.top.statfs(gfid)

    # --- entry requests ---------------------------------------------------------------------

    async def mknod(
        self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int
    ) -> Entry:
        _check_name(name)
        gfid = _new_gfid()
        gid, mode = self._new_owner(parent, gid, mode, False)
        iatt = await self.top.mknod(self.gfid(parent), name, mode, rdev, uid, gid, gfid)
        entry = self._count(iatt)
        self._made_without_caps(iatt.ino)
        return entry

    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Entry:
        _check_name(name)
        gfid = _new_gfid()
        gid, mode = self._new_owner(parent, gid, mode, True)
        iatt = await self.top.mkdir(self.gfid(parent), name, mode, uid, gid, gfid)
        return self._count(iatt)

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> Entry:
        _check_name(name)
        gfid = _new_gfid()
        gid, _ = self._new_owner(parent, gid, 0, False)
        iatt = await self.top.symlink(self.gfid(parent), name, target, uid, gid, gfid)
        return self._count(iatt)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Entry:
        _check_name(new_name)
        iatt = await self.top.link(self.gfid(ino), self.gfid(new_parent), new_name)
        return self._count(iatt)

    async def unlink(self, parent: int, name: bytes) -> None:
        _check_name(name)
        await self.top.unlink(self.gfid(parent), name)

    async def rmdir(self, parent: int, name: bytes) -> None:
        _check_name(name)
        await self.top.rmdir(self.gfid(parent), name)

    async def rename(
        self, parent: int, name: bytes, new_parent: int, new_name: bytes, flags: int = 0
    ) -> None:
        _check_name(name)
        _check_name(new_name)
        if flags & ~RENAME_NOREPLACE:
            # RENAME_EXCHANGE and RENAME_WHITEOUT have no fop behind them.
            raise error(errno.EINVAL, f"rename flags {flags:#x} are not supported")
        old_gfid, new_gfid = self.gfid(parent), self.gfid(new_parent)
        await self.top.rename(old_gfid, name, new_gfid, new_name, flags)

    # --- files ------------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> OpenFile:
        gfid = self.gfid(ino)
        xl_fh = await self.top.open(gfid, _brick_flags(flags))
        fh = self._add_handle(xl_fh, ino, gfid, False)
        mode = self._mode_without_privileges(ino) if flags & os.O_TRUNC else None
        if mode is not None:
            self._seen(await self.top.setattr(gfid, SetAttr(mode=mode), xl_fh))
        return OpenFile(fh)

    async def create(
        self, parent: int, name: bytes, flags: int, mode: int, uid: int, gid: int
    ) -> tuple[OpenFile, Entry]:
        _check_name(name)
        gfid = _new_gfid()
        flags = _brick_flags(flags)
        gid, mode = self._new_owner(parent, gid, mode, False)
        xl_fh, iatt = await self.top.create(self.gfid(parent), name, flags, mode, uid, gid, gfid)
        fh = self._add_handle(xl_fh, iatt.ino, iatt.gfid, False)
        try:
            entry = self._count(iatt)
        except OSError:
            await self.release(fh)
            raise
        self._made_without_caps(iatt.ino)
        return OpenFile(fh), entry

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return await self.top.read(self._handle(fh, False).xl_fh, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh, False)
        written = await self.top.write(handle.xl_fh, offset, data)
        mode = self._mode_without_privileges(handle.ino)
        if mode is not None:
            iatt = await self.top.setattr(handle.gfid, SetAttr(mode=mode), handle.xl_fh)
            self._seen(iatt)
        return written

    async def flush(self, fh: int, lock_owner: int = 0) -> None:
        await self.top.flush(self._handle(fh, False).xl_fh, owner_bytes(lock_owner))

    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.top.fsync(self._handle(fh, False).xl_fh, datasync)

    async def release(self, fh: int) -> None:
        """The last close: the handle is gone afterwards even if the translator fails."""
        handle = self._handle(fh, False)
        del self._handles[fh]
        await self.top.release(handle.xl_fh)

    # --- directories ------------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        gfid = self.gfid(ino)
        xl_fh = await self.top.opendir(gfid)
        return self._add_handle(xl_fh, ino, gfid, True)

    async def readdir(self, fh: int, offset: int) -> list[DirItem]:
        """Items after cookie `offset` (0 = the start); an empty list is the end."""
        handle = self._handle(fh, True)
        items: list[DirItem] = []
        if offset < DOTDOT_COOKIE:
            dot = self._entry(self._seen(await self.top.stat(handle.gfid)))
            if offset < DOT_COOKIE:
                items.append(DirItem(b".", DOT_COOKIE, dot, counted=False))
            items.append(DirItem(b"..", DOTDOT_COOKIE, dot, counted=False))
        cookie = max(offset - DOTDOT_COOKIE, 0)
        entries = await self._dir_entries(handle, cookie, fresh=offset == 0)
        for entry in entries:
            if entry.name in (b".", b".."):
                continue
            attrs = self._entry(self._seen(entry.iatt))
            item = DirItem(entry.name, entry.offset + DOTDOT_COOKIE, attrs)
            items.append(item)
        return items

    async def _dir_entries(self, handle: _Handle, cookie: int, fresh: bool) -> list[DirEntry]:
        """Translator entries after translator cookie `cookie`, from the batch when it has them.

        A listing from the start (`fresh`) always asks again, so a rewound directory shows its
        current contents; a batch that was asked from `cookie` (even an empty one) is reused.
        """
        if not fresh and handle.batch_from >= 0:
            if cookie == handle.batch_from:
                return handle.batch
            for index, entry in enumerate(handle.batch):
                if entry.offset == cookie and index + 1 < len(handle.batch):
                    return handle.batch[index + 1 :]
        batch = await self.top.readdir(handle.xl_fh, cookie, READDIR_BATCH)
        handle.batch, handle.batch_from = batch, cookie
        return batch

    async def releasedir(self, fh: int) -> None:
        handle = self._handle(fh, True)
        del self._handles[fh]
        await self.top.releasedir(handle.xl_fh)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.top.fsyncdir(self._handle(fh, True).xl_fh, datasync)

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        if is_internal_xattr(name):
            raise error(errno.ENODATA, "no such attribute")
        gfid = self.gfid(ino)
        if name != CAPABILITY_XATTR:
            return await self.top.getxattr(gfid, os.fsdecode(name))
        # The kernel asks for this before every write (to drop capabilities a write must
        # clear); its absence is kept as long as the kernel keeps the mode bits that tell it
        # the same about set-user-ID: attr-timeout.
        inode = self._inodes[ino]
        now = time.monotonic()
        if now < inode.no_caps_until:
            raise error(errno.ENODATA, "no file capabilities")
        try:
            return await self.top.getxattr(gfid, os.fsdecode(name))
        except OSError as e:
            if e.errno == errno.ENODATA:
                inode.no_caps_until = now + self.attr_timeout
            raise

    async def listxattr(self, ino: int) -> list[bytes]:
        names = await self.top.listxattr(self.gfid(ino))
        encoded = (os.fsencode(name) for name in names)
        return [name for name in encoded if not is_internal_xattr(name)]

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        if is_internal_xattr(name):
            raise error(errno.EPERM, f"{os.fsdecode(name)} is kept by glusterpy")
        gfid = self.gfid(ino)
        self._forget_caps(ino, name)
        await self.top.setxattr(gfid, os.fsdecode(name), value, flags)

    async def removexattr(self, ino: int, name: bytes) -> None:
        if is_internal_xattr(name):
            raise error(errno.EPERM, f"{os.fsdecode(name)} is kept by glusterpy")
        gfid = self.gfid(ino)
        self._forget_caps(ino, name)
        await self.top.removexattr(gfid, os.fsdecode(name))

    def _made_without_caps(self, ino: int) -> None:
        """A file just made here has no capabilities: its first write need not ask."""
        self._inodes[ino].no_caps_until = time.monotonic() + self.attr_timeout

    def _forget_caps(self, ino: int, name: bytes) -> None:
        if name == CAPABILITY_XATTR:
            self._inodes[ino].no_caps_until = -math.inf

    # --- locks (the kernel session sends them; pyfuse3 never does) -------------------------

    async def getlk(self, fh: int, owner: int, lock: Flock) -> Flock:
        xl_fh = self._handle(fh, False).xl_fh
        return await self.top.lk(xl_fh, fcntl.F_GETLK, _owned(lock, owner))

    async def setlk(self, fh: int, owner: int, lock: Flock, wait: bool) -> None:
        xl_fh = self._handle(fh, False).xl_fh
        cmd = fcntl.F_SETLKW if wait else fcntl.F_SETLK
        await self.top.lk(xl_fh, cmd, _owned(lock, owner))

    async def cancel_lock(self, fh: int, owner: int, lock: Flock) -> None:
        """Withdraw a blocking setlk of `owner` whose caller gave up (an interrupted wait)."""
        xl_fh = self._handle(fh, False).xl_fh
        await self.top.lk(xl_fh, F_CANCELLK, _owned(lock, owner))


def _new_gfid() -> bytes:
    return uuid.uuid4().bytes


def _owned(lock: Flock, owner: int) -> Flock:
    return dataclasses.replace(lock, owner=owner_bytes(owner))


def _check_name(name: bytes) -> None:
    """Refuse anything but one plain path component; the bricks check again."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise error(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > NAME_MAX:
        raise error(errno.ENAMETOOLONG, f"name of {len(name)} bytes")


def _brick_flags(flags: int) -> int:
    """Open flags for the brick: O_DIRECT is dropped, since the bricks' buffers are unaligned.

    The mount keeps no page cache of its own between opens, so the client-side promise of
    O_DIRECT still holds.
    """
    return flags & ~os.O_DIRECT
