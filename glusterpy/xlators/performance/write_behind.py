"""performance/write-behind: acknowledge writes at once and send them down in the background.

A write is queued on its file (by gfid) and answered with its full length; one background task
per file sends the queue down in order, joining contiguous writes of one handle into bigger
ones. The application learns the outcome at the latest from its next flush (close) or fsync.

Invariants (the durability promise; nothing here trades it for speed):
- Order: the writes of one file reach the child in the order they were acknowledged, one at a
  time, so overlapping writes land as they would have without us.
- Durability points: flush, fsync and release wait until every write queued before them on
  that file has been answered by the child; flush and fsync then report the failure of any
  such write, so a successful close() or fsync() means every earlier write reached the child
  and succeeded.
- A failed background write is never lost: it is kept on every handle of the file open at
  the time, and every later write, flush and fsync of such a handle fails with it, until a
  flush or fsync of that handle has reported it. Release waits for the queue too, so no
  write is still outstanding when its handle goes.
- Readers see their own writes: read, stat, fstat, setattr (truncate), lk and lookup of a file
  with queued writes first wait for the queue; readdir waits for every queue.
- Write-through: handles opened with O_SYNC or O_DSYNC (and O_DIRECT under strict-O_DIRECT),
  the first disable-for-first-nbytes bytes of a handle, and writes bigger than the window are
  sent down and answered only when the child has answered, after the queue before them.
- Memory: at most window-size bytes are queued over all files; a write that would pass it
  waits until the queue has shrunk.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from glusterpy.volfile.options import Bool, Option, Size
from glusterpy.xlator import DirEntry, Flock, Iatt, SetAttr, Translator, error

log = logging.getLogger(__name__)

# The most bytes joined into one write to the child, as GlusterFS aggregates.
AGGREGATE_SIZE = 128 << 10
# How long shutdown waits for queued writes (only writes of handles never flushed).
STOP_TIMEOUT = 30.0


@dataclass(slots=True)
class _Write:
    """One acknowledged write waiting to be sent down."""

    fh: int
    offset: int
    data: bytes


@dataclass(slots=True)
class _Handle:
    """An open file as write-behind sees it: its gfid, open flags and unreported failure."""

    gfid: bytes
    flags: int
    sync_left: int
    failure: OSError | None = None


@dataclass(slots=True)
class _Queue:
    """The writes of one file not yet answered by the child.

    `queued` counts the writes ever put in, `done` those answered; `progress` is set (and
    replaced) whenever `done` grows, so a waiter waits only for the writes before it.
    """

    writes: collections.deque[_Write] = field(default_factory=collections.deque)
    queued: int = 0
    done: int = 0
    progress: trio.Event = field(default_factory=trio.Event)


class WriteBehind(Translator):
    """Writes answered early, sent down in order by one task per file; see the module doc."""

    type_name = "performance/write-behind"
    options_table = (
        Option(
            "cache-size",
            Size(min=512 << 10, max=1 << 30),
            "1MB",
            aliases=("window-size",),
            help="The most bytes acknowledged but not yet written by the subvolume, over all "
            "files; a write that would pass it waits.",
        ),
        Option(
            "flush-behind",
            Bool(),
            "on",
            help="Accepted for compatibility with GlusterFS; a flush (close) always waits "
            "until every earlier write reached the subvolume and reports its failure.",
        ),
        Option(
            "strict-O_DIRECT",
            Bool(),
            "off",
            help="Write through (no write-behind) on handles opened with O_DIRECT. Through a "
            "FUSE mount it has no effect: the mount drops O_DIRECT before the translators.",
        ),
        Option(
            "strict-write-ordering",
            Bool(),
            "off",
            help="Accepted for compatibility; writes of a file always reach the subvolume "
            "in the order they were made.",
        ),
        Option(
            "disable-for-first-nbytes",
            Size(),
            "0",
            help="Write through the first this many bytes written on each handle "
            "(GlusterFS 2.0 used 1).",
        ),
        Option(
            "enable-O_SYNC",
            Bool(),
            "on",
            help="Accepted for compatibility; handles opened with O_SYNC or O_DSYNC are "
            "always written through.",
        ),
        Option(
            "enable-trickling-writes",
            Bool(),
            "on",
            help="Accepted for compatibility; queued writes always start at once.",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self.window = options.get("cache-size") or (1 << 20)
        self.strict_o_direct = bool(options.get("strict-O_DIRECT"))
        self.sync_first = options.get("disable-for-first-nbytes") or 0
        self._handles: dict[int, _Handle] = {}
        self._queues: dict[bytes, _Queue] = {}
        self._queued_bytes = 0
        self._progress = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        log.info("write-behind %s: window %d bytes", self.name, self.window)

    async def stop(self) -> None:
        """Send everything queued down before the children stop, waiting at most
        STOP_TIMEOUT seconds for children that no longer answer."""
        with trio.move_on_after(STOP_TIMEOUT):
            await self._drain_all()
        for gfid, queue in self._queues.items():
            log.error(
                "write-behind %s: %d writes to %s not sent at shutdown",
                self.name,
                len(queue.writes),
                uuid.UUID(bytes=gfid),
            )
        self._nursery = None

    # --- the queue --------------------------------------------------------------------------

    async def _drain(self, gfid: bytes) -> None:
        """Return once every write queued on `gfid` so far has been answered by the child."""
        queue = self._queues.get(gfid)
        if queue is not None:
            await _wait_for(queue, queue.queued)

    async def _drain_all(self) -> None:
        for queue in list(self._queues.values()):
            await _wait_for(queue, queue.queued)

    def _enqueue(self, handle: _Handle, write: _Write) -> None:
        queue = self._queues.get(handle.gfid)
        if queue is None:
            queue = self._queues[handle.gfid] = _Queue()
            assert self._nursery is not None
            self._nursery.start_soon(self._send_queue, handle.gfid, queue)
        queue.writes.append(write)
        queue.queued += 1
        self._queued_bytes += len(write.data)

    async def _send_queue(self, gfid: bytes, queue: _Queue) -> None:
        """The background task of one file: send its writes down, in order, until none are
        left; then the queue is removed."""
        try:
            while queue.writes:
                batch = _take_batch(queue.writes)
                try:
                    await self._send(gfid, batch)
                finally:
                    self._queued_bytes -= sum(len(w.data) for w in batch)
                    queue.done += len(batch)
                    queue.progress.set()
                    queue.progress = trio.Event()
                    self._progress.set()
                    self._progress = trio.Event()
        finally:
            del self._queues[gfid]

    async def _send(self, gfid: bytes, batch: list[_Write]) -> None:
        """Write one joined batch to the child; a failure is kept on the handle."""
        first = batch[0]
        data = first.data if len(batch) == 1 else b"".join(w.data for w in batch)
        try:
            written = await self.child.write(first.fh, first.offset, data)
            if written != len(data):
                raise error(errno.EIO, f"short write of {written} of {len(data)} bytes")
        except Exception as e:
            failure = e if isinstance(e, OSError) else error(errno.EIO, repr(e))
            if not isinstance(e, OSError):
                log.exception("write-behind %s: background write failed", self.name)
            self._fail(gfid, failure)

    def _fail(self, gfid: bytes, failure: OSError) -> None:
        """Keep a background failure on every open handle of the file, as Linux reports a
        writeback error to each descriptor open when it happened."""
        log.warning(
            "write-behind %s: background write to %s failed: %s",
            self.name,
            uuid.UUID(bytes=gfid),
            failure,
        )
        for handle in self._handles.values():
            if handle.gfid == gfid and handle.failure is None:
                handle.failure = failure

    async def _room_for(self, size: int) -> None:
        """Wait until `size` more bytes fit in the window."""
        while self._queued_bytes and self._queued_bytes + size > self.window:
            await self._progress.wait()

    def _check(self, handle: _Handle) -> None:
        """Fail with the handle's unreported background failure, keeping it."""
        if handle.failure is not None:
            raise error(handle.failure.errno or errno.EIO, "an earlier write failed")

    def _report(self, handle: _Handle) -> None:
        """Fail with the handle's unreported background failure, which is then reported."""
        failure, handle.failure = handle.failure, None
        if failure is not None:
            raise failure

    def _writes_through(self, handle: _Handle, size: int) -> bool:
        if handle.flags & (os.O_SYNC | os.O_DSYNC):
            return True
        if self.strict_o_direct and handle.flags & os.O_DIRECT:
            return True
        return handle.sync_left > 0 or size > self.window or self._nursery is None

    # --- handles ----------------------------------------------------------------------------

    def _remember(self, fh: int, gfid: bytes, flags: int) -> int:
        self._handles[fh] = _Handle(gfid, flags, self.sync_first)
        return fh

    async def open(self, gfid: bytes, flags: int) -> int:
        return self._remember(await self.child.open(gfid, flags), gfid, flags)

    async def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        fh, iatt = await self.child.create(parent, name, flags, mode, uid, gid, gfid)
        self._remember(fh, iatt.gfid, flags)
        return fh, iatt

    async def release(self, fh: int) -> None:
        handle = self._handles.get(fh)
        if handle is not None:
            await self._drain(handle.gfid)
            del self._handles[fh]
            if handle.failure is not None:
                log.error(
                    "write-behind %s: %s closed without flush; its write failed: %s",
                    self.name,
                    uuid.UUID(bytes=handle.gfid),
                    handle.failure,
                )
        await self.child.release(fh)

    # --- writes and durability points -------------------------------------------------------

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handles.get(fh)
        if handle is None:
            return await self.child.write(fh, offset, data)
        self._check(handle)
        if self._writes_through(handle, len(data)):
            handle.sync_left = max(handle.sync_left - len(data), 0)
            await self._drain(handle.gfid)
            self._check(handle)
            return await self.child.write(fh, offset, data)
        await self._room_for(len(data))
        self._check(handle)
        self._enqueue(handle, _Write(fh, offset, bytes(data)))
        return len(data)

    async def flush(self, fh: int, lk_owner: bytes) -> None:
        """Wait for the file's queue, pass the flush down (it also drops `lk_owner`'s locks,
        which a close must do even when it fails), then report any background failure."""
        handle = self._handles.get(fh)
        if handle is None:
            return await self.child.flush(fh, lk_owner)
        await self._drain(handle.gfid)
        try:
            await self.child.flush(fh, lk_owner)
        finally:
            self._report(handle)

    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handles.get(fh)
        if handle is not None:
            await self._drain(handle.gfid)
            self._report(handle)
        await self.child.fsync(fh, datasync)

    # --- fops that must see the queued writes -----------------------------------------------

    async def _drain_handle(self, fh: int | None) -> None:
        handle = None if fh is None else self._handles.get(fh)
        if handle is not None:
            await self._drain(handle.gfid)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        await self._drain_handle(fh)
        return await self.child.read(fh, offset, size)

    async def fstat(self, fh: int) -> Iatt:
        await self._drain_handle(fh)
        return await self.child.fstat(fh)

    async def stat(self, gfid: bytes) -> Iatt:
        await self._drain(gfid)
        return await self.child.stat(gfid)

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        await self._drain(gfid)
        return await self.child.setattr(gfid, attr, fh)

    async def lk(self, fh: int, cmd: int, lock: Flock) -> Flock:
        await self._drain_handle(fh)
        return await self.child.lk(fh, cmd, lock)

    async def lookup(
        self, parent: bytes, name: bytes, xdata: dict[str, Any] | None = None
    ) -> tuple[Iatt, dict[str, Any]]:
        iatt, reply = await self.child.lookup(parent, name, xdata)
        if iatt.gfid in self._queues:
            await self._drain(iatt.gfid)
            iatt, reply = await self.child.lookup(parent, name, xdata)
        return iatt, reply

    async def readdir(self, fh: int, offset: int, count: int) -> list[DirEntry]:
        await self._drain_all()
        return await self.child.readdir(fh, offset, count)


async def _wait_for(queue: _Queue, target: int) -> None:
    """Wait until the first `target` writes of `queue` have been answered."""
    while queue.done < target:
        await queue.progress.wait()


def _take_batch(writes: collections.deque[_Write]) -> list[_Write]:
    """Pop the first write and the writes right after it that continue it on the same handle,
    up to AGGREGATE_SIZE bytes."""
    batch = [writes.popleft()]
    size = len(batch[0].data)
    while writes:
        nxt, last = writes[0], batch[-1]
        contiguous = nxt.fh == last.fh and nxt.offset == last.offset + len(last.data)
        if not contiguous or size + len(nxt.data) > AGGREGATE_SIZE:
            break
        batch.append(writes.popleft())
        size += len(nxt.data)
    return batch
