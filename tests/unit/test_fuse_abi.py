"""The kernel FUSE wire format and the session's side of the protocol, without a kernel.

Struct sizes are checked against the kernel's documented sizes; the session is driven over a
SOCK_SEQPACKET socketpair, which keeps message boundaries as /dev/fuse does (one read is one
request, one write one reply).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat

import pytest
import trio

from glusterpy.fuse.kernel import abi
from glusterpy.fuse.kernel.abi import Init, Op
from glusterpy.fuse.kernel.session import Session, SessionOptions, max_pages_allowed
from glusterpy.xlator import Iatt

# --- struct layouts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "size"),
    [
        (abi.IN_HEADER, 40), (abi.OUT_HEADER, 16), (abi.INIT_OUT, 64), (abi.ATTR_OUT, 104),
        (abi.ENTRY_OUT, 128), (abi.SETATTR_IN, 88), (abi.LK_IN, 48), (abi.LK_OUT, 24),
        (abi.READ_IN, 40), (abi.WRITE_IN, 40), (abi.STATFS_OUT, 80), (abi.OPEN_OUT, 16),
        (abi.RELEASE_IN, 24), (abi.FLUSH_IN, 24), (abi.MKNOD_IN, 16), (abi.CREATE_IN, 16),
        (abi.GETATTR_IN, 16), (abi.RENAME2_IN, 16), (abi.DIRENT, 24),
        (abi.NOTIFY_INVAL_INODE_OUT, 24), (abi.NOTIFY_INVAL_ENTRY_OUT, 16),
    ],
)  # fmt: skip
def test_struct_sizes_match_the_kernel(layout, size):
    assert layout.size == size


@pytest.mark.parametrize(
    ("minor", "size"), [(3, 8), (4, 8), (5, 24), (13, 24), (22, 24), (23, 64), (36, 64), (45, 64)]
)
def test_init_reply_size_follows_the_minor_version(minor, size):
    assert abi.init_out_size(minor) == size


def test_read_buffer_holds_the_largest_write_request():
    assert abi.read_buffer_size(1 << 20) == 40 + 40 + (1 << 20)
    assert abi.read_buffer_size(4096) == abi.MIN_READ_BUFFER


def test_dirents_are_padded_to_eight_bytes():
    for name in (b"a", b"abcdefgh", b"x" * 255):
        record = abi.pack_dirent(7, 3, stat.S_IFREG | 0o644, name)
        assert len(record) % 8 == 0
        assert len(record) == abi.dirent_size(name)
        ino, offset, namelen, kind = abi.DIRENT.unpack_from(record)
        assert (ino, offset, namelen, kind) == (7, 3, len(name), stat.S_IFREG >> 12)
        assert record[24 : 24 + namelen] == name


def test_attr_times_split_into_seconds_and_nanoseconds():
    attr = Iatt(bytes(16), stat.S_IFREG | 0o600, 1, 5, 6, 0, 10, 1, 4096, 1_500_000_001, 2, 3)
    fields = abi.ATTR_OUT.unpack(abi.pack_attr_out(9, attr, 1.25))
    assert fields[:2] == (1, 250_000_000)
    assert fields[3] == 9 and fields[4] == 10
    assert fields[6] == 1 and fields[9] == 500_000_001


def test_cstring_returns_the_name_and_what_follows():
    assert abi.cstring(b"old\0new\0") == (b"old", 4)
    assert abi.cstring(b"old\0new\0", 4) == (b"new", 8)


# --- INIT ------------------------------------------------------------------------------------


def _init_body(minor: int, flags: int, flags2: int = 0) -> bytes:
    body = abi.INIT_IN.pack(7, minor, 131072, flags)
    if minor >= 36:
        body += abi.INIT_IN_FLAGS2.pack(flags2) + bytes(44)
    return body


class _NoLocks:
    """A file system without lock methods."""


class _Locks:
    async def getlk(self, *args):
        raise AssertionError("not called")

    async def setlk(self, *args):
        raise AssertionError("not called")


@pytest.mark.parametrize("minor", [28, 31, 36, 38, 45, 50])
def test_init_reply_is_exactly_the_size_of_the_minor_we_answer(minor):
    session = Session(_Locks(), -1, SessionOptions())
    offered = 0x73FFFFFB
    reply = session._init_reply(_init_body(minor, offered))
    answered = min(minor, abi.KERNEL_MINOR_VERSION)
    assert len(reply) == abi.init_out_size(answered) == 64
    fields = abi.INIT_OUT.unpack(reply)
    major, got_minor, readahead, flags, background, congestion, max_write, _, max_pages = fields[:9]
    assert (major, got_minor, readahead) == (7, answered, 131072)
    assert (background, congestion) == (64, 48)
    assert max_pages == max_pages_allowed()
    assert max_write == max_pages * 4096
    assert flags & Init.MAX_PAGES and flags & Init.POSIX_LOCKS and flags & Init.FLOCK_LOCKS
    assert not flags & Init.WRITEBACK_CACHE


def test_init_asks_for_no_locks_the_file_system_cannot_answer():
    session = Session(_NoLocks(), -1, SessionOptions())
    flags = abi.INIT_OUT.unpack(session._init_reply(_init_body(45, 0x73FFFFFB)))[3]
    assert not flags & (Init.POSIX_LOCKS | Init.FLOCK_LOCKS)


def test_init_grants_only_what_the_kernel_offers():
    session = Session(_Locks(), -1, SessionOptions())
    offered = Init.ASYNC_READ | Init.BIG_WRITES
    flags = abi.INIT_OUT.unpack(session._init_reply(_init_body(45, offered)))[3]
    assert flags == offered


def test_init_honours_a_smaller_max_write_and_other_queue_limits():
    options = SessionOptions(max_write=128 * 1024, max_background=20, congestion_threshold=15)
    session = Session(_Locks(), -1, options)
    fields = abi.INIT_OUT.unpack(session._init_reply(_init_body(45, 0x73FFFFFB)))
    assert (fields[4], fields[5], fields[6], fields[8]) == (20, 15, 128 * 1024, 32)


def test_init_from_another_major_answers_only_our_major():
    session = Session(_Locks(), -1, SessionOptions())
    reply = session._init_reply(abi.INIT_IN.pack(8, 0, 0, 0))
    assert len(reply) == 8
    assert reply[:4] == (7).to_bytes(4, "little")


# --- the session over a socketpair -----------------------------------------------------------


class _FakeFS:
    """Answers a few requests: getattr works, read raises ValueError, setlk blocks forever."""

    def __init__(self):
        self.forgotten: list[tuple[int, int]] = []
        self.lock_waits = 0
        self.withdrawn: list[tuple] = []

    async def getattr(self, ino, fh=None):
        attr = Iatt(bytes(16), stat.S_IFREG | 0o644, 1, 0, 0, 0, 3, 0, 4096, 0, 0, 0)
        return type("Attr", (), {"attr": attr, "attr_timeout": 1.0})()

    async def read(self, fh, offset, size):
        raise ValueError("a bug in the file system")

    async def open(self, ino, flags):
        raise OSError(errno.EACCES, "no")

    async def readlink(self, ino):
        return "a str where bytes belong"

    def forget(self, items):
        self.forgotten.extend(items)

    async def getlk(self, fh, owner, lock):
        raise AssertionError("not called")

    async def setlk(self, fh, owner, lock, wait):
        self.lock_waits += 1
        await trio.sleep_forever()

    async def cancel_lock(self, fh, owner, lock):
        self.withdrawn.append((fh, owner, lock.type, lock.start, lock.length))


def _request(opcode: int, unique: int, body: bytes = b"", nodeid: int = 1) -> bytes:
    length = abi.IN_HEADER.size + len(body)
    return abi.IN_HEADER.pack(length, opcode, unique, nodeid, 0, 0, 42, 0, 0) + body


async def _reply(sock: trio.socket.SocketType) -> tuple[int, int, bytes]:
    with trio.fail_after(5):
        data = await sock.recv(1 << 16)
    length, error, unique = abi.OUT_HEADER.unpack_from(data)
    assert length == len(data)
    return unique, -error, data[abi.OUT_HEADER.size :]


async def _with_session(script) -> _FakeFS:
    fs = _FakeFS()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    kernel = trio.socket.from_stdlib_socket(ours)
    session = Session(fs, theirs.fileno(), SessionOptions(max_write=65536))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve)
            await kernel.send(_request(Op.INIT, 2, _init_body(45, 0x73FFFFFB)))
            unique, err, body = await _reply(kernel)
            assert (unique, err, len(body)) == (2, 0, 64)
            await script(kernel, fs)
            kernel.close()
    finally:
        theirs.close()
    return fs


def test_session_answers_errors_and_survives_a_failing_handler():
    async def script(kernel, fs):
        await kernel.send(_request(Op.READ, 4, abi.READ_IN.pack(1, 0, 10, 0, 0, 0, 0)))
        assert (await _reply(kernel))[:2] == (4, errno.EIO)
        await kernel.send(_request(Op.OPEN, 6, abi.OPEN_IN.pack(os.O_RDONLY, 0)))
        assert (await _reply(kernel))[:2] == (6, errno.EACCES)
        await kernel.send(_request(Op.READLINK, 12))
        assert (await _reply(kernel))[:2] == (12, errno.EIO)
        await kernel.send(_request(Op.BMAP, 8, bytes(16)))
        assert (await _reply(kernel))[:2] == (8, errno.ENOSYS)
        await kernel.send(_request(Op.GETATTR, 10, abi.GETATTR_IN.pack(0, 0, 0), nodeid=5))
        unique, err, body = await _reply(kernel)
        assert (unique, err, len(body)) == (10, 0, abi.ATTR_OUT.size)
        assert abi.ATTR_OUT.unpack(body)[3] == 5

    trio.run(_with_session, script)


def test_forgets_get_no_reply_and_reach_the_file_system():
    async def script(kernel, fs):
        await kernel.send(_request(Op.FORGET, 4, abi.FORGET_IN.pack(3), nodeid=9))
        items = abi.FORGET_ONE.pack(10, 1) + abi.FORGET_ONE.pack(11, 2)
        await kernel.send(_request(Op.BATCH_FORGET, 6, abi.BATCH_FORGET_IN.pack(2, 0) + items))
        await kernel.send(_request(Op.GETATTR, 8, abi.GETATTR_IN.pack(0, 0, 0)))
        assert (await _reply(kernel))[:2] == (8, 0)
        assert fs.forgotten == [(9, 3), (10, 1), (11, 2)]

    trio.run(_with_session, script)


def test_interrupt_cancels_a_blocked_lock_wait_with_eintr():
    lock = abi.LK_IN.pack(1, 77, 0, abi.OFFSET_MAX, fcntl.F_WRLCK, 42, 0, 0)

    async def script(kernel, fs):
        await kernel.send(_request(Op.SETLKW, 4, lock))
        await kernel.send(_request(Op.GETATTR, 6, abi.GETATTR_IN.pack(0, 0, 0)))
        # The lock wait does not hold up the request behind it.
        assert (await _reply(kernel))[:2] == (6, 0)
        assert fs.lock_waits == 1
        await kernel.send(_request(Op.INTERRUPT, 4 | 1, abi.INTERRUPT_IN.pack(4)))
        assert (await _reply(kernel))[:2] == (4, errno.EINTR)
        # Before answering, the wait was taken back from the file system (the bricks).
        assert fs.withdrawn == [(1, 77, fcntl.F_WRLCK, 0, 0)]
        # An interrupt for a request that is already answered gets EAGAIN.
        await kernel.send(_request(Op.INTERRUPT, 8 | 1, abi.INTERRUPT_IN.pack(4)))
        assert (await _reply(kernel))[:2] == (8 | 1, errno.EAGAIN)

    trio.run(_with_session, script)


def test_notifications_carry_their_code_and_no_unique():
    fs = _FakeFS()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)

    async def run():
        kernel = trio.socket.from_stdlib_socket(ours)
        session = Session(fs, theirs.fileno(), SessionOptions(max_write=65536))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve)
            await kernel.send(_request(Op.INIT, 2, _init_body(45, 0x73FFFFFB)))
            await _reply(kernel)
            session.invalidate_entry(1, b"name")
            # The code travels in the error field, as a positive number.
            unique, code, body = await _reply(kernel)
            assert (unique, code) == (0, -abi.NOTIFY_INVAL_ENTRY)
            assert body == abi.NOTIFY_INVAL_ENTRY_OUT.pack(1, 4, 0) + b"name\0"
            session.invalidate_inode(7)
            unique, code, body = await _reply(kernel)
            assert (unique, code) == (0, -abi.NOTIFY_INVAL_INODE)
            assert body == abi.NOTIFY_INVAL_INODE_OUT.pack(7, 0, 0)
            kernel.close()

    try:
        trio.run(run)
    finally:
        theirs.close()


def test_a_kernel_older_than_we_serve_gets_eproto_and_the_session_ends():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)

    async def run():
        kernel = trio.socket.from_stdlib_socket(ours)
        session = Session(_FakeFS(), theirs.fileno(), SessionOptions(max_write=65536))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve)
            await kernel.send(_request(Op.INIT, 2, _init_body(abi.OLDEST_MINOR_VERSION - 1, 0)))
            assert (await _reply(kernel))[:2] == (2, errno.EPROTO)
        assert session.negotiated is None

    try:
        with ours:
            trio.run(run)
    finally:
        theirs.close()
