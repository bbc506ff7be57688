"""performance/quick-read: keep the whole content of small files and open them lazily.

A lookup asks the child for the content of files up to max-file-size with the xdata key
CONTENT_KEY (a child that knows it answers the bytes under the same key; one that does not
answers nothing, and the content is kept from the first read instead: a short answer to a read
at offset 0 is the whole file). While a file's content is kept, a read-only open of it is
answered without going down, and reads are served from memory; the child's handle is opened
only when a fop needs it (fstat, lk, fsync, ...) or the content has gone.

Invariants:
- Never stale for longer than cache-timeout: content is served only within cache-timeout
  seconds of being read from the child.
- Never stale for our own client: write and setattr of a file through us, and an O_TRUNC or
  writable open, drop its content first and hold it as changing (`Freshness`), so content
  fetched across the change is not kept.
- Bounded: at most cache-size bytes of content over all files, least recently used out first.
- Handles: our own lazy handles are negative; the child's handles pass up unchanged. A lazy
  handle opens the child's handle at most once, with the flags it was opened with.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from glusterpy.volfile.options import Int, Option, Size
from glusterpy.xlator import CONTENT_KEY, Flock, Iatt, SetAttr, Translator, error
from glusterpy.xlators.performance._cache import Freshness, now

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Lazy:
    """A read-only open answered by us; `child_fh` once the child's handle was opened."""

    gfid: bytes
    flags: int
    child_fh: int | None = None


class QuickRead(Translator):
    """Whole-file content of small files, with lazy opens; see the module docstring."""

    type_name = "performance/quick-read"
    options_table = (
        Option(
            "max-file-size",
            Size(max=1000 << 10),
            "64KB",
            help="Files up to this size have their content kept.",
        ),
        Option(
            "cache-timeout",
            Int(min=1, max=60),
            "1",
            help="Seconds kept content is served after it was read from the subvolume.",
        ),
        Option(
            "cache-size",
            Size(max=32 << 30),
            "128MB",
            help="The most bytes of content kept, over all files.",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        max_size = options.get("max-file-size")
        self.max_size = 64 << 10 if max_size is None else max_size
        self.timeout = options.get("cache-timeout") or 1
        size = options.get("cache-size")
        self.cache_size = 128 << 20 if size is None else size
        self.cached_bytes = 0
        # gfid -> (content, served until), in use order.
        self._content: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._lazy: dict[int, _Lazy] = {}
        self._open: dict[int, bytes] = {}
        self._lazy_numbers = itertools.count(1)
        self._freshness = Freshness()

    async def start(self, nursery: trio.Nursery) -> None:
        log.info(
            "quick-read %s: files up to %d bytes kept %d s, %d bytes in all",
            self.name,
            self.max_size,
            self.timeout,
            self.cache_size,
        )

    # --- the content cache ------------------------------------------------------------------

    def content(self, gfid: bytes) -> bytes | None:
        """The kept content of `gfid` while it is within the timeout."""
        item = self._content.get(gfid)
        if item is None:
            return None
        if now() >= item[1]:
            self._drop(gfid)
            return None
        self._content.move_to_end(gfid)
        return item[0]

    def _keep(self, gfid: bytes, data: bytes, token: int) -> None:
        if len(data) > self.max_size or not self._freshness.fresh(gfid, token):
            return
        self._drop(gfid)
        if len(data) > self.cache_size:
            return
        self._content[gfid] = (data, now() + self.timeout)
        self.cached_bytes += len(data)
        while self.cached_bytes > self.cache_size:
            _, (old, _) = self._content.popitem(last=False)
            self.cached_bytes -= len(old)

    def _drop(self, gfid: bytes) -> None:
        item = self._content.pop(gfid, None)
        if item is not None:
            self.cached_bytes -= len(item[0])

    # --- lookup: ask for the content --------------------------------------------------------

    async def lookup(
        self, parent: bytes, name: bytes, xdata: dict[str, Any] | None = None
    ) -> tuple[Iatt, dict[str, Any]]:
        asked = dict(xdata or {})
        asked.setdefault(CONTENT_KEY, self.max_size)
        with self._freshness.fetching() as token:
            iatt, reply = await self.child.lookup(parent, name, asked)
            data = reply.get(CONTENT_KEY)
            if isinstance(data, bytes) and len(data) == iatt.size:
                self._keep(iatt.gfid, data, token)
        if CONTENT_KEY in reply and not (xdata and CONTENT_KEY in xdata):
            reply = {key: value for key, value in reply.items() if key != CONTENT_KEY}
        return iatt, reply

    # --- handles ----------------------------------------------------------------------------

    async def open(self, gfid: bytes, flags: int) -> int:
        read_only = flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_TRUNC
        if read_only and self.content(gfid) is not None:
            fh = -next(self._lazy_numbers)
            self._lazy[fh] = _Lazy(gfid, flags)
            return fh
        if not read_only:
            self._drop(gfid)
        with self._freshness.changing(gfid) if flags & os.O_TRUNC else contextlib.nullcontext():
            fh = await self.child.open(gfid, flags)
        self._open[fh] = gfid
        return fh

    async def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        fh, iatt = await self.child.create(parent, name, flags, mode, uid, gid, gfid)
        self._open[fh] = iatt.gfid
        return fh, iatt

    async def _real(self, fh: int) -> int:
        """The child's handle for `fh`, opening it now for a lazy handle."""
        lazy = self._lazy.get(fh)
        if lazy is None:
            if fh < 0:
                raise error(errno.EBADF, f"no open file {fh}")
            return fh
        if lazy.child_fh is None:
            child_fh = await self.child.open(lazy.gfid, lazy.flags)
            if lazy.child_fh is not None or fh not in self._lazy:
                # Another fop opened it meanwhile, or the handle was released meanwhile.
                await self.child.release(child_fh)
            else:
                lazy.child_fh = child_fh
        if lazy.child_fh is None:
            raise error(errno.EBADF, f"file {fh} was closed")
        return lazy.child_fh

    def _gfid(self, fh: int) -> bytes | None:
        lazy = self._lazy.get(fh)
        return lazy.gfid if lazy is not None else self._open.get(fh)

    async def release(self, fh: int) -> None:
        lazy = self._lazy.pop(fh, None)
        self._open.pop(fh, None)
        if lazy is None:
            await self.child.release(fh)
        elif lazy.child_fh is not None:
            await self.child.release(lazy.child_fh)

    async def flush(self, fh: int, lk_owner: bytes) -> None:
        lazy = self._lazy.get(fh)
        if lazy is not None and lazy.child_fh is None:
            return  # nothing was opened below, so no lock can be held there
        await self.child.flush(await self._real(fh), lk_owner)

    # --- reads ------------------------------------------------------------------------------

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        gfid = self._gfid(fh)
        data = None if gfid is None else self.content(gfid)
        if data is not None:
            return data[offset : offset + size]
        with self._freshness.fetching() as token:
            answer = await self.child.read(await self._real(fh), offset, size)
            if gfid is not None and offset == 0 and len(answer) < size:
                self._keep(gfid, answer, token)
        return answer

    # --- the rest of the handle fops --------------------------------------------------------

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        gfid = self._gfid(fh)
        if gfid is None:
            return await self.child.write(await self._real(fh), offset, data)
        self._drop(gfid)
        with self._freshness.changing(gfid):
            return await self.child.write(await self._real(fh), offset, data)

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        self._drop(gfid)
        real = None if fh is None else await self._real(fh)
        with self._freshness.changing(gfid):
            return await self.child.setattr(gfid, attr, real)

    async def fstat(self, fh: int) -> Iatt:
        lazy = self._lazy.get(fh)
        if lazy is not None and lazy.child_fh is None:
            try:
                return await self.child.stat(lazy.gfid)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESTALE):
                    raise
        return await self.child.fstat(await self._real(fh))

    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.child.fsync(await self._real(fh), datasync)

    async def lk(self, fh: int, cmd: int, lock: Flock) -> Flock:
        return await self.child.lk(await self._real(fh), cmd, lock)
