"""performance/read-ahead: turn sequential reads of an open file into fewer, bigger reads.

Each open handle remembers where its last read ended. A read that starts there (the first read
at offset 0 counts) asks the child for page-count pages of page-size bytes at once, answers
from the front and keeps the rest on the handle for the reads that follow. Any other read
passes down unchanged and drops what the handle kept.

Invariants:
- Never stale for long: kept bytes are served only within BUFFER_LIFETIME seconds of being
  read, so another client's change shows after that at the latest.
- Never stale for our own client: write and setattr (truncate) of a file through us, and an
  O_TRUNC open, drop every handle's kept bytes of that file and hold it as changing
  (`Freshness`), so a read answered across the change is not kept.
- Bounded: a handle keeps at most page-count * page-size bytes, all handles together at most
  MAX_KEPT bytes; past that, reads pass down without reading ahead.
- A short answer from the child is the end of the file at that moment; it is served as such
  only within the lifetime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from glusterpy.volfile.options import Bool, Int, Option, Size
from glusterpy.xlator import Iatt, SetAttr, Translator
from glusterpy.xlators.performance._cache import Freshness, now

log = logging.getLogger(__name__)

BUFFER_LIFETIME = 1.0
MAX_KEPT = 64 << 20


@dataclass(slots=True)
class _Stream:
    """One open handle: where its next sequential read starts, and the bytes read ahead.

    `data` holds the file's bytes from `start`, as read at `read_at`; `eof` says the child
    answered short, so the file ended where `data` ends.
    """

    gfid: bytes
    next_offset: int = 0
    start: int = 0
    data: bytes = b""
    eof: bool = False
    read_at: float = 0.0

    def covers(self, offset: int, size: int) -> bool:
        if not self.data and not self.eof:
            return False
        if now() - self.read_at >= BUFFER_LIFETIME or offset < self.start:
            return False
        end = self.start + len(self.data)
        return offset + size <= end or (self.eof and offset <= end)

    def take(self, offset: int, size: int) -> bytes:
        within = offset - self.start
        return self.data[within : within + size]


class ReadAhead(Translator):
    """Per-handle sequential read-ahead; see the module docstring."""

    type_name = "performance/read-ahead"
    options_table = (
        Option(
            "page-count",
            Int(min=1, max=16),
            "4",
            help="How many pages a sequential read asks for at once.",
        ),
        Option(
            "page-size",
            Size(min=4 << 10, max=1 << 20),
            "128KB",
            help="The size of one read-ahead page.",
        ),
        Option(
            "force-atime-update",
            Bool(),
            "off",
            help="Accepted for compatibility with GlusterFS; has no effect (reads served "
            "from read-ahead do not touch the file's access time).",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        page_count = options.get("page-count") or 4
        page_size = options.get("page-size") or (128 << 10)
        self.window = page_count * page_size
        self.kept_bytes = 0
        self._streams: dict[int, _Stream] = {}
        self._freshness = Freshness()

    async def start(self, nursery: trio.Nursery) -> None:
        log.info("read-ahead %s: %d bytes per sequential read", self.name, self.window)

    def _forget(self, stream: _Stream) -> None:
        self.kept_bytes -= len(stream.data)
        stream.data, stream.eof = b"", False

    def _drop_file(self, gfid: bytes) -> None:
        for stream in self._streams.values():
            if stream.gfid == gfid:
                self._forget(stream)

    # --- handles ----------------------------------------------------------------------------

    async def open(self, gfid: bytes, flags: int) -> int:
        if flags & os.O_TRUNC:
            self._drop_file(gfid)
            with self._freshness.changing(gfid):
                fh = await self.child.open(gfid, flags)
        else:
            fh = await self.child.open(gfid, flags)
        self._streams[fh] = _Stream(gfid)
        return fh

    async def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        fh, iatt = await self.child.create(parent, name, flags, mode, uid, gid, gfid)
        self._streams[fh] = _Stream(iatt.gfid)
        return fh, iatt

    async def release(self, fh: int) -> None:
        stream = self._streams.pop(fh, None)
        if stream is not None:
            self._forget(stream)
        await self.child.release(fh)

    # --- reads ------------------------------------------------------------------------------

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        stream = self._streams.get(fh)
        if stream is None or size <= 0:
            return await self.child.read(fh, offset, size)
        if stream.covers(offset, size):
            answer = stream.take(offset, size)
        elif offset == stream.next_offset and self._may_keep(stream, size):
            answer = await self._read_ahead(fh, stream, offset, size)
        else:
            self._forget(stream)
            answer = await self.child.read(fh, offset, size)
        stream.next_offset = offset + len(answer)
        return answer

    def _may_keep(self, stream: _Stream, size: int) -> bool:
        wanted = max(size, self.window)
        return self.kept_bytes - len(stream.data) + wanted <= MAX_KEPT

    async def _read_ahead(self, fh: int, stream: _Stream, offset: int, size: int) -> bytes:
        """Read a whole window from `offset`, answer the front, keep the rest if still fresh."""
        self._forget(stream)
        wanted = max(size, self.window)
        with self._freshness.fetching() as token:
            data = await self.child.read(fh, offset, wanted)
            keep = self._freshness.fresh(stream.gfid, token) and fh in self._streams
        if keep:
            self._forget(stream)
            stream.start, stream.data, stream.read_at = offset, data, now()
            stream.eof = len(data) < wanted
            self.kept_bytes += len(data)
        return data[:size]

    # --- what changes content ---------------------------------------------------------------

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        stream = self._streams.get(fh)
        if stream is None:
            for other in self._streams.values():
                self._forget(other)
            return await self.child.write(fh, offset, data)
        self._drop_file(stream.gfid)
        with self._freshness.changing(stream.gfid):
            return await self.child.write(fh, offset, data)

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        self._drop_file(gfid)
        with self._freshness.changing(gfid):
            return await self.child.setattr(gfid, attr, fh)
