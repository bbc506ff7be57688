"""The translator interface: the fops every translator answers, and the values they pass.

A translator is an object with async fops and an ordered list of children (its subvolumes).
Every fop's default passes the call unchanged to the first child, so a translator writes only
the fops it changes. Objects are addressed by gfid (16 bytes); entry fops by the parent's gfid
plus a name (bytes, one path component). Open files and directories are plain integer handles
that belong to the translator that made them; a translator that keeps per-handle state maps its
own handles onto its children's.

Errors travel as `OSError` with an errno; any other exception is a bug and is turned into EIO at
the edges (protocol/server, the FUSE bridge).

Lifecycle: a graph starts its translators children first (`start`), and stops them parents
first (`stop`). A translator tells its parents that it went up or down with `emit`; the default
`notify` passes a child's event on to its own parents.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import errno
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import trio

from glusterpy.volfile import registry
from glusterpy.volfile.options import Option

log = logging.getLogger(__name__)

GFID_SIZE = 16
ROOT_GFID = bytes(15) + b"\x01"
# Lookup xdata key: asked with a size limit, answered with the whole content of a regular file
# no bigger than that (performance/quick-read asks, storage/posix answers).
CONTENT_KEY = "glusterfs.content"
T = TypeVar("T")


def error(err: int, detail: str = "") -> OSError:
    """An OSError for `err`, the one way fops report failure."""
    message = os.strerror(err) + (f": {detail}" if detail else "")
    return OSError(err, message)


def gfid_to_ino(gfid: bytes) -> int:
    """The inode number shown to users: the low 8 bytes of the gfid, 1 for the root."""
    if gfid == ROOT_GFID:
        return 1
    return int.from_bytes(gfid[8:], "big") or 2


@dataclass(slots=True)
class Iatt:
    """The attributes of one object, as storage/posix reports them (like struct stat)."""

    gfid: bytes
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    blksize: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int

    @property
    def ino(self) -> int:
        return gfid_to_ino(self.gfid)


@dataclass(slots=True)
class SetAttr:
    """The attributes a setattr changes; None leaves one as it is."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


@dataclass(slots=True)
class DirEntry:
    """One directory entry with its attributes; `offset` is where the next readdir resumes."""

    name: bytes
    offset: int
    iatt: Iatt


@dataclass(slots=True)
class StatVfs:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    namemax: int


@dataclass(slots=True)
class Flock:
    """A byte-range lock request or answer (fcntl types F_RDLCK, F_WRLCK, F_UNLCK).

    `length` 0 means to the end of the file. `owner` identifies the lock holder; protocol/server
    prefixes it with the client's identity so that owners of different clients never collide.
    `flock` marks a whole-file flock(2) lock, which conflicts only with other flock locks.
    """

    type: int
    start: int
    length: int
    pid: int
    owner: bytes
    flock: bool = False


# The lk command that withdraws a blocked F_SETLKW request of the same owner and range, as
# Linux's F_CANCELLK does for lockd: a client whose waiting process was interrupted sends it so
# that the bricks do not grant the lock later to nobody.
F_CANCELLK = 1029


class Event(enum.Enum):
    CHILD_UP = "up"
    CHILD_DOWN = "down"


# Set by performance/io-threads for the calls it passes down: blocking work below it runs in
# that limiter's threads. Without io-threads above it, storage runs blocking calls inline.
_blocking_limiter: contextvars.ContextVar[trio.CapacityLimiter | None] = contextvars.ContextVar(
    "blocking_limiter", default=None
)


@contextlib.contextmanager
def blocking_calls_in(limiter: trio.CapacityLimiter) -> Iterator[None]:
    """Within this block, `run_blocking` runs its function in threads bounded by `limiter`."""
    token = _blocking_limiter.set(limiter)
    try:
        yield
    finally:
        _blocking_limiter.reset(token)


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking function: in an io-threads thread when one is in charge, else inline."""
    limiter = _blocking_limiter.get()
    if limiter is None:
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter)


class Translator:
    """Base class of all translators. Subclasses set `type_name` and `options` to register.

    `self.options` holds the checked option values: every declared (non-pattern) key with its
    value or default, under its canonical key, plus any pattern-matched keys that were given.
    """

    type_name: ClassVar[str] = ""
    options_table: ClassVar[tuple[Option, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            registry.register(cls.type_name, cls.options_table, cls)

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        self.name = name
        self.children = list(children)
        self.options = options
        self.parents: list[Translator] = []
        for child in self.children:
            child.parents.append(self)

    def __repr__(self) -> str:
        return f"<{self.type_name or type(self).__name__} {self.name}>"

    @property
    def child(self) -> Translator:
        if not self.children:
            raise error(errno.ENOSYS, f"{self.name} has no subvolume to pass the call to")
        return self.children[0]

    # --- lifecycle and events ---------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Called once, children first. Background tasks go into `nursery`."""

    async def stop(self) -> None:
        """Called once at shutdown, parents first."""

    def notify(self, event: Event, child: Translator) -> None:
        """A child went up or down. The default passes the event on to our parents."""
        self.emit(event)

    def emit(self, event: Event) -> None:
        for parent in self.parents:
            parent.notify(event, self)

    async def client_disconnect(self, client: str) -> None:
        """A client's connection is gone: drop its locks and state. Sent to every child."""
        for child in self.children:
            await child.client_disconnect(client)

    # --- inode fops -------------------------------------------------------------------------

    async def lookup(
        self, parent: bytes, name: bytes, xdata: dict[str, Any] | None = None
    ) -> tuple[Iatt, dict[str, Any]]:
        """Find `name` in directory `parent`. `xdata` asks for extra data (xattrs, content)."""
        return await self.child.lookup(parent, name, xdata)

    async def stat(self, gfid: bytes) -> Iatt:
        return await self.child.stat(gfid)

    async def fstat(self, fh: int) -> Iatt:
        return await self.child.fstat(fh)

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        """Change mode, owner, size or times; through `fh` when given (ftruncate, fchmod)."""
        return await self.child.setattr(gfid, attr, fh)

    async def readlink(self, gfid: bytes) -> bytes:
        return await self.child.readlink(gfid)

    async def statfs(self, gfid: bytes) -> StatVfs:
        return await self.child.statfs(gfid)

    # --- entry fops: the caller chooses the new object's gfid and owner ----------------------

    async def mknod(
        self, parent: bytes, name: bytes, mode: int, rdev: int, uid: int, gid: int, gfid: bytes
    ) -> Iatt:
        return await self.child.mknod(parent, name, mode, rdev, uid, gid, gfid)

    async def mkdir(
        self, parent: bytes, name: bytes, mode: int, uid: int, gid: int, gfid: bytes
    ) -> Iatt:
        return await self.child.mkdir(parent, name, mode, uid, gid, gfid)

    async def symlink(
        self, parent: bytes, name: bytes, target: bytes, uid: int, gid: int, gfid: bytes
    ) -> Iatt:
        return await self.child.symlink(parent, name, target, uid, gid, gfid)

    async def create(
        self,
        parent: bytes,
        name: bytes,
        flags: int,
        mode: int,
        uid: int,
        gid: int,
        gfid: bytes,
    ) -> tuple[int, Iatt]:
        """Create and open a regular file; returns the open handle and its attributes."""
        return await self.child.create(parent, name, flags, mode, uid, gid, gfid)

    async def link(self, gfid: bytes, parent: bytes, name: bytes) -> Iatt:
        return await self.child.link(gfid, parent, name)

    async def unlink(self, parent: bytes, name: bytes) -> None:
        return await self.child.unlink(parent, name)

    async def rmdir(self, parent: bytes, name: bytes) -> None:
        return await self.child.rmdir(parent, name)

    async def rename(
        self, oldparent: bytes, oldname: bytes, newparent: bytes, newname: bytes, flags: int = 0
    ) -> None:
        """Rename; `flags` may hold RENAME_NOREPLACE (1)."""
        return await self.child.rename(oldparent, oldname, newparent, newname, flags)

    # --- file fops --------------------------------------------------------------------------

    async def open(self, gfid: bytes, flags: int) -> int:
        return await self.child.open(gfid, flags)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return await self.child.read(fh, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return await self.child.write(fh, offset, data)

    async def flush(self, fh: int, lk_owner: bytes) -> None:
        """A close(2) of one descriptor: report deferred errors, drop `lk_owner`'s locks."""
        return await self.child.flush(fh, lk_owner)

    async def fsync(self, fh: int, datasync: bool) -> None:
        return await self.child.fsync(fh, datasync)

    async def release(self, fh: int) -> None:
        """The last close of an open file: the handle is gone after this."""
        return await self.child.release(fh)

    # --- directory fops ---------------------------------------------------------------------

    async def opendir(self, gfid: bytes) -> int:
        return await self.child.opendir(gfid)

    async def readdir(self, fh: int, offset: int, count: int) -> list[DirEntry]:
        """Up to `count` entries after cookie `offset` (0 = start), with attributes."""
        return await self.child.readdir(fh, offset, count)

    async def releasedir(self, fh: int) -> None:
        return await self.child.releasedir(fh)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return await self.child.fsyncdir(fh, datasync)

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, gfid: bytes, name: str) -> bytes:
        return await self.child.getxattr(gfid, name)

    async def listxattr(self, gfid: bytes) -> list[str]:
        return await self.child.listxattr(gfid)

    async def setxattr(self, gfid: bytes, name: str, value: bytes, flags: int = 0) -> None:
        return await self.child.setxattr(gfid, name, value, flags)

    async def removexattr(self, gfid: bytes, name: str) -> None:
        return await self.child.removexattr(gfid, name)

    async def xattrop(self, gfid: bytes, op: str, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        """Atomically update xattrs; op "add-array" adds big-endian int32 arrays element-wise.

        Returns the new values. Replicate keeps its changelog counters with this.
        """
        return await self.child.xattrop(gfid, op, xattrs)

    # --- locks ------------------------------------------------------------------------------

    async def lk(self, fh: int, cmd: int, lock: Flock) -> Flock:
        """fcntl-style lock on an open file: cmd F_GETLK, F_SETLK, F_SETLKW or F_CANCELLK.

        F_GETLK answers the conflicting lock, or `lock` with type F_UNLCK when none conflicts.
        F_CANCELLK withdraws the same holder's waiting requests that overlap `lock`.
        """
        return await self.child.lk(fh, cmd, lock)

    async def inodelk(self, domain: str, gfid: bytes, cmd: int, lock: Flock) -> None:
        """Internal byte-range lock on an inode in a named domain (cmd F_SETLK or F_SETLKW)."""
        return await self.child.inodelk(domain, gfid, cmd, lock)

    async def entrylk(
        self, domain: str, parent: bytes, name: bytes | None, op: str, owner: bytes
    ) -> None:
        """Lock a name in a directory (None: the whole directory); op lock|trylock|unlock."""
        return await self.child.entrylk(domain, parent, name, op, owner)

    # --- several fops at once ---------------------------------------------------------------

    async def compound(self, calls: Sequence[Call]) -> list[Any]:
        """Run `calls` (fop name, arguments) one after another, stopping at the first failure.

        Answers one item per call that ran: its result, or for the call that failed its
        OSError (always the last item; the calls after it did not run). The default runs each
        fop on this translator; protocol/client sends them all to the brick in one request.
        """
        results: list[Any] = []
        for fop, args in calls:
            try:
                results.append(await getattr(self, fop)(*args))
            except OSError as exc:
                results.append(exc)
                break
        return results


# One fop of a compound: its name (one of FOPS) and its positional arguments.
Call = tuple[str, tuple[Any, ...]]

# The fops, in the order the wire protocol numbers them. Appending keeps old numbers valid.
FOPS = (
    "lookup",
    "stat",
    "fstat",
    "setattr",
    "readlink",
    "statfs",
    "mknod",
    "mkdir",
    "symlink",
    "create",
    "link",
    "unlink",
    "rmdir",
    "rename",
    "open",
    "read",
    "write",
    "flush",
    "fsync",
    "release",
    "opendir",
    "readdir",
    "releasedir",
    "fsyncdir",
    "getxattr",
    "listxattr",
    "setxattr",
    "removexattr",
    "xattrop",
    "lk",
    "inodelk",
    "entrylk",
)
