"""A small in-memory file system with the bridge's method names, served by the kernel session.

Run as a program it mounts one file system on every mountpoint given (several mounts share the
same files and locks, like two clients of one volume) and serves until they are unmounted:

    python kernel_session_fs.py [--max-write N] [--timeout S] MOUNTPOINT...

It keeps POSIX and flock locks itself, with the semantics the bricks' features/locks gives, and
answers some test-only extended attributes on the root so that tests can look inside it:
`user.test.write_sizes` and `user.test.read_sizes` (JSON: request size -> count),
`user.test.locks` (locks held),
`user.test.session` (JSON: what INIT negotiated). Setting `user.test.drop` on the root to a name
removes that name behind the kernel's back and sends INVAL_ENTRY from inside the handler.
"""

from __future__ import annotations

import argparse
import collections
import errno
import fcntl
import functools
import json
import logging
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass, field

import trio

from glusterpy.fuse.kernel import SessionOptions, serve_mount
from glusterpy.xlator import Flock, Iatt, SetAttr, StatVfs

log = logging.getLogger(__name__)

ROOT = 1


@dataclass
class Entry:
    ino: int
    generation: int
    attr: Iatt
    entry_timeout: float
    attr_timeout: float


@dataclass
class Attr:
    attr: Iatt
    attr_timeout: float


@dataclass
class OpenFile:
    fh: int
    direct_io: bool = False
    keep_cache: bool = False


@dataclass
class DirItem:
    name: bytes
    offset: int
    entry: Entry
    counted: bool = True


@dataclass
class Node:
    attr: Iatt
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, int] = field(default_factory=dict)
    target: bytes = b""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class Held:
    """One held lock: [start, end] inclusive, taken through open file `fh`."""

    owner: int
    flock: bool
    type: int
    start: int
    end: int
    pid: int
    fh: int

    def conflicts(self, other: Held) -> bool:
        if self.flock != other.flock or self.owner == other.owner:
            return False
        if self.end < other.start or other.end < self.start:
            return False
        return fcntl.F_WRLCK in (self.type, other.type)


def _end(lock: Flock) -> int:
    return (1 << 63) - 1 if lock.length == 0 else lock.start + lock.length - 1


class MemFS:
    """Files, directories, symlinks and locks in memory; nodeid = inode number."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.nodes: dict[int, Node] = {}
        self.next_ino = ROOT + 1
        self.handles: dict[int, int] = {}
        self.next_fh = 1
        self.locks: dict[int, list[Held]] = collections.defaultdict(list)
        self.lock_changed: dict[int, trio.Event] = collections.defaultdict(trio.Event)
        self.write_sizes: collections.Counter[int] = collections.Counter()
        self.read_sizes: collections.Counter[int] = collections.Counter()
        self.sessions: list = []
        # The root belongs to whoever serves it, as a user mount's root does.
        root = self._iatt(ROOT, stat.S_IFDIR | 0o755, os.getuid(), os.getgid())
        self.nodes[ROOT] = Node(root)

    # --- helpers ----------------------------------------------------------------------------

    def _iatt(self, ino: int, mode: int, uid: int, gid: int) -> Iatt:
        now = time.time_ns()
        gfid = ino.to_bytes(16, "big")
        return Iatt(gfid, mode, 1, uid, gid, 0, 0, 0, 4096, now, now, now)

    def _node(self, ino: int) -> Node:
        if ino not in self.nodes:
            raise OSError(errno.ESTALE, "stale")
        return self.nodes[ino]

    def _entry(self, ino: int) -> Entry:
        return Entry(ino, 0, self._node(ino).attr, self.timeout, self.timeout)

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)
        if not stat.S_ISDIR(node.attr.mode):
            raise OSError(errno.ENOTDIR, "not a directory")
        return node

    def _new(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Entry:
        directory = self._dir(parent)
        if name in directory.children:
            raise OSError(errno.EEXIST, "exists")
        ino = self.next_ino
        self.next_ino += 1
        self.nodes[ino] = Node(self._iatt(ino, mode, uid, gid))
        directory.children[name] = ino
        return self._entry(ino)

    # --- the bridge's methods ---------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> Entry:
        ino = self._dir(parent).children.get(name)
        if ino is None:
            raise OSError(errno.ENOENT, "no such name")
        return self._entry(ino)

    def forget(self, items: list[tuple[int, int]]) -> None:
        pass

    def remember(self, entry: Entry) -> None:
        pass

    async def getattr(self, ino: int, fh: int | None = None) -> Attr:
        return Attr(self._node(ino).attr, self.timeout)

    async def setattr(self, ino: int, attr: SetAttr, fh: int | None = None) -> Attr:
        node = self._node(ino)
        if attr.size is not None:
            del node.data[attr.size :]
            node.data.extend(bytes(attr.size - len(node.data)))
            node.attr.size = attr.size
        if attr.mode is not None:
            node.attr.mode = stat.S_IFMT(node.attr.mode) | stat.S_IMODE(attr.mode)
        for key in ("uid", "gid", "atime_ns", "mtime_ns"):
            if getattr(attr, key) is not None:
                setattr(node.attr, key, getattr(attr, key))
        return Attr(node.attr, self.timeout)

    async def readlink(self, ino: int) -> bytes:
        return self._node(ino).target

    async def mknod(self, parent, name, mode, rdev, uid, gid) -> Entry:
        return self._new(parent, name, mode, uid, gid)

    async def mkdir(self, parent, name, mode, uid, gid) -> Entry:
        return self._new(parent, name, stat.S_IFDIR | stat.S_IMODE(mode), uid, gid)

    async def symlink(self, parent, name, target, uid, gid) -> Entry:
        entry = self._new(parent, name, stat.S_IFLNK | 0o777, uid, gid)
        self.nodes[entry.ino].target = target
        return entry

    async def link(self, ino, new_parent, new_name) -> Entry:
        directory = self._dir(new_parent)
        if new_name in directory.children:
            raise OSError(errno.EEXIST, "exists")
        directory.children[new_name] = ino
        self._node(ino).attr.nlink += 1
        return self._entry(ino)

    async def unlink(self, parent, name) -> None:
        ino = self._dir(parent).children.pop(name, None)
        if ino is None:
            raise OSError(errno.ENOENT, "no such name")
        self.nodes[ino].attr.nlink -= 1

    async def rmdir(self, parent, name) -> None:
        directory = self._dir(parent)
        ino = directory.children.get(name)
        if ino is None:
            raise OSError(errno.ENOENT, "no such name")
        if self._dir(ino).children:
            raise OSError(errno.ENOTEMPTY, "not empty")
        del directory.children[name]

    async def rename(self, parent, name, new_parent, new_name, flags) -> None:
        source, target = self._dir(parent), self._dir(new_parent)
        if name not in source.children:
            raise OSError(errno.ENOENT, "no such name")
        if flags & 1 and new_name in target.children:
            raise OSError(errno.EEXIST, "exists")
        target.children[new_name] = source.children.pop(name)

    async def open(self, ino, flags) -> OpenFile:
        node = self._node(ino)
        if flags & os.O_TRUNC:
            node.data.clear()
            node.attr.size = 0
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = ino
        return OpenFile(fh)

    async def create(self, parent, name, flags, mode, uid, gid):
        entry = self._new(parent, name, stat.S_IFREG | stat.S_IMODE(mode), uid, gid)
        return await self.open(entry.ino, 0), entry

    async def read(self, fh, offset, size) -> bytes:
        self.read_sizes[size] += 1
        return bytes(self.nodes[self.handles[fh]].data[offset : offset + size])

    async def write(self, fh, offset, data) -> int:
        self.write_sizes[len(data)] += 1
        node = self.nodes[self.handles[fh]]
        if len(node.data) < offset:
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.attr.size = len(node.data)
        return len(data)

    async def flush(self, fh, lock_owner) -> None:
        ino = self.handles[fh]
        self._drop(ino, lambda held: held.owner == lock_owner and not held.flock)

    async def release(self, fh) -> None:
        # As the bricks' features/locks does: the last close drops the file's flock locks only;
        # POSIX locks go with FLUSH, and OFD locks are the session's to unlock.
        ino = self.handles.pop(fh)
        self._drop(ino, lambda held: held.fh == fh and held.flock)

    async def fsync(self, fh, datasync) -> None:
        pass

    async def opendir(self, ino) -> int:
        self._dir(ino)
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = ino
        return fh

    async def readdir(self, fh, offset) -> list[DirItem]:
        ino = self.handles[fh]
        names = [(b".", ino), (b"..", ino)] + sorted(self._dir(ino).children.items())
        items = []
        for index, (name, child) in enumerate(names[offset:], start=offset + 1):
            items.append(DirItem(name, index, self._entry(child), name not in (b".", b"..")))
        return items

    async def releasedir(self, fh) -> None:
        self.handles.pop(fh, None)

    async def fsyncdir(self, fh, datasync) -> None:
        pass

    async def statfs(self, ino) -> StatVfs:
        return StatVfs(4096, 4096, 1 << 20, 1 << 19, 1 << 19, 1 << 16, 1 << 15, 1 << 15, 255)

    # --- extended attributes, with the test's windows into the file system ------------------

    async def getxattr(self, ino, name) -> bytes:
        if ino == ROOT and name.startswith(b"user.test."):
            return self._test_value(name)
        value = self._node(ino).xattrs.get(name)
        if value is None:
            raise OSError(errno.ENODATA, "no such attribute")
        return value

    def _test_value(self, name: bytes) -> bytes:
        if name == b"user.test.write_sizes":
            return json.dumps(dict(self.write_sizes)).encode()
        if name == b"user.test.read_sizes":
            return json.dumps(dict(self.read_sizes)).encode()
        if name == b"user.test.locks":
            return str(sum(len(held) for held in self.locks.values())).encode()
        if name == b"user.test.session":
            negotiated = [vars(s.negotiated) for s in self.sessions if s.negotiated]
            return json.dumps(negotiated).encode()
        raise OSError(errno.ENODATA, "no such test attribute")

    async def listxattr(self, ino) -> list[bytes]:
        return list(self._node(ino).xattrs)

    async def setxattr(self, ino, name, value, flags) -> None:
        if ino == ROOT and name == b"user.test.drop":
            # Change the tree behind the kernel's back and tell it, from inside this handler,
            # while the kernel holds the root directory's lock for this very setxattr.
            self.nodes[ROOT].children.pop(value, None)
            for session in self.sessions:
                session.invalidate_entry(ROOT, value)
            return
        self._node(ino).xattrs[name] = value

    async def removexattr(self, ino, name) -> None:
        if self._node(ino).xattrs.pop(name, None) is None:
            raise OSError(errno.ENODATA, "no such attribute")

    # --- locks --------------------------------------------------------------------------------

    async def getlk(self, fh, owner, lock: Flock) -> Flock:
        ino = self.handles[fh]
        wanted = Held(owner, lock.flock, lock.type, lock.start, _end(lock), lock.pid, fh)
        for held in self.locks[ino]:
            if held.conflicts(wanted):
                length = 0 if held.end == (1 << 63) - 1 else held.end - held.start + 1
                return Flock(held.type, held.start, length, held.pid, b"", held.flock)
        return Flock(fcntl.F_UNLCK, lock.start, lock.length, lock.pid, b"", lock.flock)

    async def setlk(self, fh, owner, lock: Flock, wait: bool) -> None:
        ino = self.handles[fh]
        wanted = Held(owner, lock.flock, lock.type, lock.start, _end(lock), lock.pid, fh)
        if lock.type != fcntl.F_UNLCK:
            while any(held.conflicts(wanted) for held in self.locks[ino]):
                if not wait:
                    raise OSError(errno.EAGAIN, "lock held by another owner")
                await self.lock_changed[ino].wait()
        self._unlock_range(ino, wanted)
        if lock.type != fcntl.F_UNLCK:
            self.locks[ino].append(wanted)
        self._changed(ino)

    def _unlock_range(self, ino: int, lock: Held) -> None:
        kept = []
        for held in self.locks[ino]:
            mine = held.owner == lock.owner and held.flock == lock.flock
            if not mine or held.end < lock.start or lock.end < held.start:
                kept.append(held)
                continue
            if held.start < lock.start:
                kept.append(Held(**{**vars(held), "end": lock.start - 1}))
            if held.end > lock.end:
                kept.append(Held(**{**vars(held), "start": lock.end + 1}))
        self.locks[ino] = kept

    def _drop(self, ino: int, which) -> None:
        self.locks[ino] = [held for held in self.locks[ino] if not which(held)]
        self._changed(ino)

    def _changed(self, ino: int) -> None:
        self.lock_changed.pop(ino, trio.Event()).set()


async def main(args: argparse.Namespace) -> None:
    fs = MemFS(args.timeout)
    options = SessionOptions(max_write=args.max_write, locks=not args.no_locks)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        for mountpoint in args.mountpoints:
            session = await nursery.start(
                functools.partial(
                    serve_mount, fs, mountpoint, "kernelsessiontest", options,
                    via_fusermount=args.fusermount, read_ahead_kb=args.read_ahead_kb,
                    allow_other=not args.private,
                )
            )  # fmt: skip
            fs.sessions.append(session)
        print("ready", flush=True)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    # Cancelling the sessions unmounts (lazily) on the way out.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-write", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--no-locks", action="store_true")
    parser.add_argument("--fusermount", action="store_true")
    parser.add_argument("--private", action="store_true", help="no allow_other")
    parser.add_argument("--read-ahead-kb", type=int, default=None)
    parser.add_argument("mountpoints", nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    trio.run(main, args)
