"""The trio session that serves one FUSE connection: INIT, then a task per request.

Invariants:
- Only the reader task reads the device fd, and it never waits on a handler: every request but
  FORGET, BATCH_FORGET and INTERRUPT (answered inline, they never block) runs in its own task,
  so a blocking lock wait or a slow brick never stalls the requests behind it.
- `_active` maps the unique of every request whose task has not replied yet to its cancel scope;
  the reader registers a request before it reads the next one, so an INTERRUPT whose target is
  not there names a request that already finished (we answer EAGAIN, as the protocol asks).
- Each request gets exactly one reply (FORGETs none); one exception never ends the session: an
  OSError becomes its errno, anything else EIO with one log line.
- Notifications are written by a worker thread: an INVAL_ENTRY can block in the kernel until a
  request in that directory is answered, and that answer must come from this event loop.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from glusterpy.fuse import module as fuse_module
from glusterpy.fuse.kernel import abi
from glusterpy.fuse.kernel.abi import Init, Op
from glusterpy.fuse.kernel.handlers import Handlers, Payload, Request

log = logging.getLogger(__name__)

# Requests that an INTERRUPT cancels. Lock requests wait for other clients for as long as they
# hold a lock, so a signal must end the wait; other requests finish on their own, and cancelling
# them half-way through a brick call would gain nothing but doubt about what was done.
INTERRUPTIBLE = frozenset({Op.SETLKW, Op.SETLK, Op.GETLK})

# Capabilities we ask for (and get only where the kernel offers them). Locks are added when the
# file system answers them. No writeback cache: it is unsafe with several clients.
WANTED = (
    Init.ASYNC_READ | Init.ATOMIC_O_TRUNC | Init.BIG_WRITES | Init.AUTO_INVAL_DATA
    | Init.DO_READDIRPLUS | Init.ASYNC_DIO | Init.PARALLEL_DIROPS | Init.MAX_PAGES
)  # fmt: skip
LOCKS = Init.POSIX_LOCKS | Init.FLOCK_LOCKS

# Read this many requests in a row at most before letting the handler tasks run.
READS_PER_CHECKPOINT = 16


def max_pages_allowed() -> int:
    """The largest max_pages the loaded fuse module accepts (4 MiB on the patched one)."""
    return fuse_module.loaded().max_pages


@dataclass
class SessionOptions:
    """What the session negotiates at INIT; GlusterFS's background queue defaults (64/48)."""

    max_write: int | None = None  # None: as large as the fuse module allows
    max_background: int = 64
    congestion_threshold: int = 48
    locks: bool = True

    def max_pages(self) -> int:
        allowed = max_pages_allowed()
        if self.max_write is None:
            return allowed
        return max(1, min(allowed, math.ceil(self.max_write / abi.PAGE_SIZE)))


@dataclass
class Negotiated:
    """The outcome of INIT: the kernel's protocol minor and what both sides agreed on."""

    minor: int
    flags: int
    max_write: int
    max_pages: int
    max_readahead: int


class SessionEnded(Exception):
    """The connection is gone (unmounted or aborted)."""


class Session:
    """Serves one FUSE connection `fd` with file system `fs` (see the module docstring)."""

    def __init__(
        self,
        fs: Any,
        fd: int,
        options: SessionOptions | None = None,
        on_init: Callable[[Negotiated], None] | None = None,
    ):
        self.fs = fs
        self.fd = fd
        self.options = options or SessionOptions()
        self.on_init = on_init
        self.handlers = Handlers(fs)
        self.negotiated: Negotiated | None = None
        self._max_pages = self.options.max_pages()
        self._buffer = bytearray(abi.read_buffer_size(self._max_pages * abi.PAGE_SIZE))
        self._view = memoryview(self._buffer)
        self._active: dict[int, tuple[int, trio.CancelScope | None]] = {}
        self._notify_send, self._notify_recv = trio.open_memory_channel[bytes](math.inf)

    # --- the loop ---------------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer INIT, then serve requests until the file system is unmounted."""
        try:
            await self._init()
        except SessionEnded as exc:
            log.info("FUSE session on fd %d ended before it began: %s", self.fd, exc)
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_notifications)
                await self._read_requests(nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._notify_send.close()
        log.info("FUSE session on fd %d ended", self.fd)

    async def _read_requests(self, nursery: trio.Nursery) -> None:
        reads = 0
        while True:
            try:
                req = await self._next_request()
            except SessionEnded:
                return
            if req.opcode in (Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT, Op.DESTROY):
                if self._inline(req):
                    return
                continue
            handler = self.handlers.table.get(req.opcode)
            scope = trio.CancelScope() if req.opcode in INTERRUPTIBLE else None
            self._active[req.unique] = (req.opcode, scope)
            nursery.start_soon(self._answer, req, handler, scope)
            reads += 1
            if reads % READS_PER_CHECKPOINT == 0:
                await trio.lowlevel.checkpoint()

    async def _next_request(self) -> Request:
        """Read one request; wait for the fd only when there is none queued."""
        while True:
            try:
                size = os.readv(self.fd, [self._buffer])
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.fd)
                continue
            except OSError as exc:
                # ENOENT: the request was interrupted while we read it; EINTR: a signal.
                if exc.errno in (errno.ENOENT, errno.EINTR):
                    continue
                if exc.errno == errno.ENODEV:
                    raise SessionEnded() from None
                raise
            if size == 0:
                raise SessionEnded()
            return self._decode(size)

    def _decode(self, size: int) -> Request:
        view = self._view
        length, opcode, unique, nodeid, uid, gid, pid, _, _ = abi.IN_HEADER.unpack_from(view)
        start = abi.IN_HEADER.size
        end = min(length, size)
        if opcode == Op.WRITE:
            split = start + abi.WRITE_IN.size
            body, data = bytes(view[start:split]), bytes(view[split:end])
            return Request(opcode, unique, nodeid, uid, gid, pid, body, data)
        return Request(opcode, unique, nodeid, uid, gid, pid, bytes(view[start:end]))

    async def _answer(self, req: Request, handler: Any, scope: trio.CancelScope | None) -> None:
        err, payload = 0, None
        try:
            if handler is None:
                err = errno.ENOSYS
            elif scope is None:
                payload = await handler(req)
            else:
                with scope:
                    payload = await handler(req)
                if scope.cancelled_caught:
                    err = errno.EINTR
        except OSError as exc:
            err = exc.errno if isinstance(exc.errno, int) and 0 < exc.errno < 512 else errno.EIO
        except Exception:
            log.exception("%r failed", req)
            err = errno.EIO
        finally:
            self._active.pop(req.unique, None)
        if err:
            log.debug("%r: %s", req, os.strerror(err))
            payload = None
        self._reply(req.unique, err, payload)

    def _inline(self, req: Request) -> bool:
        """Handle the requests that need no task; True when the session should end."""
        try:
            return self._inline_request(req)
        except Exception:
            log.exception("%r failed", req)
            return False

    def _inline_request(self, req: Request) -> bool:
        if req.opcode == Op.FORGET:
            (nlookup,) = abi.FORGET_IN.unpack_from(req.body)
            self.fs.forget([(req.nodeid, nlookup)])
        elif req.opcode == Op.BATCH_FORGET:
            (count, _) = abi.BATCH_FORGET_IN.unpack_from(req.body)
            start, step = abi.BATCH_FORGET_IN.size, abi.FORGET_ONE.size
            count = min(count, (len(req.body) - start) // step)
            items = [abi.FORGET_ONE.unpack_from(req.body, start + i * step) for i in range(count)]
            self.fs.forget(items)
        elif req.opcode == Op.INTERRUPT:
            self._interrupt(req)
        else:
            self._reply(req.unique, 0, None)
            return True
        return False

    def _interrupt(self, req: Request) -> None:
        (target,) = abi.INTERRUPT_IN.unpack_from(req.body)
        active = self._active.get(target)
        if active is None:
            # Already answered (or never seen): the kernel drops or requeues the interrupt.
            self._reply(req.unique, errno.EAGAIN, None)
            return
        opcode, scope = active
        if scope is not None:
            log.debug("interrupt cancels %s unique=%d", abi.OP_NAMES.get(opcode), target)
            scope.cancel()
        # Other requests finish on their own; the protocol allows ignoring the interrupt.

    # --- writing ----------------------------------------------------------------------------

    def _reply(self, unique: int, err: int, payload: Payload) -> None:
        if payload is None:
            parts: list[bytes] = []
        elif isinstance(payload, list):
            parts = payload
        else:
            parts = [payload]
        try:
            length = abi.OUT_HEADER.size + sum(len(p) for p in parts)
            header = abi.OUT_HEADER.pack(length, -err, unique)
            os.writev(self.fd, [header, *parts])
        except OSError as exc:
            # ENOENT: the request was interrupted and is gone; ENODEV: we were unmounted.
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                log.error("reply to unique %d failed: %s", unique, exc)
        except (TypeError, ValueError, struct.error):
            # A handler answered something that is not bytes: a bug, but the caller still
            # gets an answer and the session goes on.
            log.exception("reply to unique %d is malformed; answering EIO", unique)
            self._reply(unique, errno.EIO, None)

    def invalidate_inode(self, ino: int, offset: int = 0, length: int = 0) -> None:
        """Ask the kernel to drop node `ino`'s cached attributes and data (never blocks).

        offset -1 drops only the attributes; length 0 means to the end of the file.
        """
        body = abi.NOTIFY_INVAL_INODE_OUT.pack(ino, offset, length)
        self._queue_notify(abi.NOTIFY_INVAL_INODE, body)

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        """Ask the kernel to forget the name `name` in directory `parent` (never blocks)."""
        body = abi.NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), 0) + name + b"\0"
        self._queue_notify(abi.NOTIFY_INVAL_ENTRY, body)

    def _queue_notify(self, code: int, body: bytes) -> None:
        if self.negotiated is None:
            return
        header = abi.OUT_HEADER.pack(abi.OUT_HEADER.size + len(body), code, abi.NOTIFY_UNIQUE)
        try:
            self._notify_send.send_nowait(header + body)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            log.debug("session ended; notification dropped")

    async def _send_notifications(self) -> None:
        async for message in self._notify_recv:
            await trio.to_thread.run_sync(self._write_notify, message, abandon_on_cancel=True)

    def _write_notify(self, message: bytes) -> None:
        try:
            os.write(self.fd, message)
        except OSError as exc:
            # ENOENT: the kernel no longer caches that inode or name: nothing to invalidate.
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                log.warning("FUSE notification failed: %s", exc)

    # --- INIT -------------------------------------------------------------------------------

    async def _init(self) -> None:
        while True:
            try:
                req = await self._next_request()
            except SessionEnded:
                raise SessionEnded("unmounted before INIT") from None
            if req.opcode == Op.INIT:
                break
            log.warning("request %r before INIT; answering EIO", req)
            self._reply(req.unique, errno.EIO, None)
        major, minor = abi.INIT_IN.unpack_from(req.body)[:2]
        if major == abi.KERNEL_VERSION and minor < abi.OLDEST_MINOR_VERSION:
            log.error(
                "kernel FUSE 7.%d is too old: 7.%d is needed", minor, abi.OLDEST_MINOR_VERSION
            )
            self._reply(req.unique, errno.EPROTO, None)
            raise SessionEnded("kernel protocol too old")
        self._reply(req.unique, 0, self._init_reply(req.body))
        if self.on_init is not None and self.negotiated is not None:
            self.on_init(self.negotiated)

    def _init_reply(self, body: bytes) -> bytes:
        major, minor, max_readahead, flags = abi.INIT_IN.unpack_from(body)
        if major != abi.KERNEL_VERSION:
            log.error("kernel speaks FUSE %d.%d; we speak %d", major, minor, abi.KERNEL_VERSION)
            # Our major alone: a newer kernel retries INIT with it, an older one gives up.
            return abi.INIT_OUT.pack(abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION, *[0] * 11)[:8]
        minor = min(minor, abi.KERNEL_MINOR_VERSION)
        offered = flags
        if flags & Init.INIT_EXT and len(body) >= abi.INIT_IN.size + 4:
            offered |= abi.INIT_IN_FLAGS2.unpack_from(body, abi.INIT_IN.size)[0] << 32
        locks = self.options.locks and Op.SETLK in self.handlers.table
        wanted = WANTED | (LOCKS if locks else 0)
        granted = wanted & offered
        max_write = self._max_pages * abi.PAGE_SIZE
        self.negotiated = Negotiated(minor, granted, max_write, self._max_pages, max_readahead)
        log.info(
            "FUSE %d.%d: max_write %d, max_pages %d, background %d/%d, flags %#x",
            major, minor, max_write, self._max_pages, self.options.max_background,
            self.options.congestion_threshold, granted,
        )  # fmt: skip
        reply = abi.INIT_OUT.pack(
            abi.KERNEL_VERSION, minor, max_readahead,
            (granted & 0xFFFFFFFF) | (offered & Init.INIT_EXT),
            self.options.max_background, self.options.congestion_threshold, max_write,
            1, self._max_pages, 0, granted >> 32, 0, 0,
        )  # fmt: skip
        return reply[: abi.init_out_size(minor)]
