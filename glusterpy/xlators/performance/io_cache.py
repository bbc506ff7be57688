"""performance/io-cache: keep pages of file content read through us, for cache-timeout seconds.

Reads are answered from 128 KiB pages kept per file (gfid); missing pages are read from the
child in one request. A file's pages are served for cache-timeout seconds after its entry was
made, then dropped and read again. (GlusterFS keeps them when size and mtime are unchanged; a
rewrite of the same size within one timestamp tick would then stay unseen for good.)

Invariants:
- Never stale for longer than the timeout: every page was read from the child after its file's
  entry was made, and is served only until cache-timeout seconds after that (0: never served);
  another client's change shows at the latest on the first read after that.
- Never stale for our own client: write, setattr (truncate) and an O_TRUNC open passing through
  drop the file's pages first and hold it as changing (`Freshness`), so a read answered across
  the change is not kept.
- Bounded: at most cache-size bytes of pages over all files; when more are needed, the least
  recently used pages of the lowest priority go first.
- Files smaller than min-file-size or bigger than max-file-size (when not 0) are not cached.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from glusterpy.volfile.options import Int, Option, OptionType, Size
from glusterpy.xlator import DirEntry, Iatt, SetAttr, Translator
from glusterpy.xlators.performance._cache import Freshness, TimedLru, now

log = logging.getLogger(__name__)

PAGE_SIZE = 128 << 10
DEFAULT_PRIORITY = 1
MAX_RECENT = 65_536


class PriorityList(OptionType):
    """`pattern:priority,...`, e.g. `*.html:2,abc*:1`: files whose name matches a pattern get
    its priority (the highest of those that match); higher priorities are evicted last."""

    def parse(self, text: str) -> tuple[tuple[str, int], ...]:
        if not text.strip():
            return ()
        rules = []
        for item in text.split(","):
            pattern, sep, number = item.strip().rpartition(":")
            if not sep or not pattern or not number.isdigit():
                raise ValueError(f"'{item}' is not pattern:priority (e.g. *.html:2)")
            rules.append((pattern, int(number)))
        return tuple(rules)

    def describe(self) -> str:
        return "list of pattern:priority"


@dataclass(slots=True)
class _File:
    """The cached pages of one file, all read from the child after the entry was made and
    served until `expires_at`."""

    expires_at: float
    priority: int
    pages: dict[int, bytes] = field(default_factory=dict)


class IoCache(Translator):
    """A page cache over all files, with per-file revalidation; see the module docstring."""

    type_name = "performance/io-cache"
    options_table = (
        Option(
            "cache-size",
            Size(min=4 << 20, max=6 << 30),
            "32MB",
            help="The most bytes of file content kept, over all files.",
        ),
        Option(
            "cache-timeout",
            Int(min=0, max=60),
            "1",
            aliases=("force-revalidate-timeout",),
            help="Seconds a file's pages are served before they are read again.",
        ),
        Option(
            "min-file-size",
            Size(),
            "0",
            help="Files smaller than this are not cached.",
        ),
        Option(
            "max-file-size",
            Size(),
            "0",
            help="Files bigger than this are not cached; 0 means no limit.",
        ),
        Option(
            "priority",
            PriorityList(),
            "",
            help="pattern:priority,...; pages of higher priority are evicted last "
            "(files matching no pattern have priority 1).",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self.cache_size = options.get("cache-size") or (32 << 20)
        timeout = options.get("cache-timeout")
        self.timeout = 1 if timeout is None else timeout
        self.min_size = options.get("min-file-size") or 0
        self.max_size = options.get("max-file-size") or 0
        self.rules = options.get("priority") or ()
        self.files: dict[bytes, _File] = {}
        self.cached_bytes = 0
        # Pages in use order, per priority: (gfid, index) -> page length.
        self._lru: dict[int, OrderedDict[tuple[bytes, int], int]] = {}
        # Attributes of files recently looked up or created, for the size limits of their
        # first read, and the priority their names gave them (only when not the default).
        self._recent: TimedLru[Iatt] = TimedLru(max(self.timeout, 1), MAX_RECENT)
        self._priorities: TimedLru[int] = TimedLru(float("inf"), MAX_RECENT)
        self._open: dict[int, bytes] = {}
        self._freshness = Freshness()

    async def start(self, nursery: trio.Nursery) -> None:
        log.info(
            "io-cache %s: up to %d bytes of pages, kept %d s",
            self.name,
            self.cache_size,
            self.timeout,
        )

    def _seen(self, iatt: Iatt, name: bytes, token: int) -> None:
        """Note the attributes and the name's priority of a file answered by the child."""
        if (self.min_size or self.max_size) and self._freshness.fresh(iatt.gfid, token):
            self._recent.put(iatt.gfid, iatt)
        if self.rules:
            text = os.fsdecode(name)
            found = [prio for pattern, prio in self.rules if fnmatch.fnmatchcase(text, pattern)]
            if found and max(found) != DEFAULT_PRIORITY:
                self._priorities.put(iatt.gfid, max(found))

    def _priority(self, gfid: bytes) -> int:
        priority = self._priorities.get(gfid)
        return DEFAULT_PRIORITY if priority is None else priority

    def _cacheable(self, size: int) -> bool:
        return size >= self.min_size and (not self.max_size or size <= self.max_size)

    # --- pages ------------------------------------------------------------------------------

    def _drop(self, gfid: bytes) -> None:
        self._recent.pop(gfid)
        f = self.files.pop(gfid, None)
        if f is None:
            return
        lru = self._lru.get(f.priority, OrderedDict())
        for index, page in f.pages.items():
            lru.pop((gfid, index), None)
            self.cached_bytes -= len(page)

    def _add_page(self, gfid: bytes, f: _File, index: int, page: bytes) -> None:
        old = f.pages.get(index)
        if old is not None:
            self.cached_bytes -= len(old)
        f.pages[index] = page
        self.cached_bytes += len(page)
        lru = self._lru.setdefault(f.priority, OrderedDict())
        lru[(gfid, index)] = len(page)
        lru.move_to_end((gfid, index))
        self._evict()

    def _evict(self) -> None:
        """Drop least recently used pages, lowest priority first, until within cache-size."""
        for priority in sorted(self._lru):
            lru = self._lru[priority]
            while lru and self.cached_bytes > self.cache_size:
                (gfid, index), _ = lru.popitem(last=False)
                f = self.files.get(gfid)
                page = f.pages.pop(index, None) if f is not None else None
                if page is not None:
                    self.cached_bytes -= len(page)
                if f is not None and not f.pages:
                    del self.files[gfid]
            if self.cached_bytes <= self.cache_size:
                return

    def _touch(self, gfid: bytes, f: _File, index: int) -> None:
        lru = self._lru.get(f.priority)
        if lru is not None and (gfid, index) in lru:
            lru.move_to_end((gfid, index))

    # --- expiry ---------------------------------------------------------------------------

    async def _valid_file(self, fh: int, gfid: bytes) -> _File | None:
        """The file's cache entry within its timeout (a new, empty one after it); None if the
        file is not to be cached. The size is asked only when size limits are set."""
        f = self.files.get(gfid)
        if f is not None and now() < f.expires_at:
            return f
        if f is not None:
            self._drop(gfid)
        if self.min_size or self.max_size:
            iatt = self._recent.get(gfid)
            with self._freshness.fetching() as token:
                if iatt is None:
                    iatt = await self.child.fstat(fh)
                if not self._freshness.fresh(gfid, token) or not self._cacheable(iatt.size):
                    return None
            if gfid in self.files:  # another read made one meanwhile
                return self.files[gfid]
        f = self.files[gfid] = _File(now() + self.timeout, self._priority(gfid))
        return f

    # --- reads ------------------------------------------------------------------------------

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        gfid = self._open.get(fh)
        if gfid is None or size <= 0:
            return await self.child.read(fh, offset, size)
        f = await self._valid_file(fh, gfid)
        if f is None:
            return await self.child.read(fh, offset, size)
        first, last = offset // PAGE_SIZE, (offset + size - 1) // PAGE_SIZE
        # A snapshot taken without an await in between, so that pages evicted or dropped
        # while the missing ones are fetched cannot shorten the answer.
        pages = {i: f.pages[i] for i in range(first, last + 1) if i in f.pages}
        for index in pages:
            self._touch(gfid, f, index)
        missing = [i for i in range(first, last + 1) if i not in pages]
        if missing:
            pages.update(await self._fetch_pages(fh, gfid, f, missing[0], missing[-1]))
        return _assemble(pages, offset, size)

    async def _fetch_pages(
        self, fh: int, gfid: bytes, f: _File, first: int, last: int
    ) -> dict[int, bytes]:
        """Pages first..last, read from the child in one request, and kept in `f` if it is
        still the file's entry and nothing changed the file meanwhile. Pages past the end of
        the file are left out; the last one may be short."""
        with self._freshness.fetching() as token:
            data = await self.child.read(fh, first * PAGE_SIZE, (last - first + 1) * PAGE_SIZE)
            keep = self._freshness.fresh(gfid, token)
        pages: dict[int, bytes] = {}
        for index in range(first, last + 1):
            page = data[(index - first) * PAGE_SIZE : (index - first + 1) * PAGE_SIZE]
            if not page and index > first:
                break
            pages[index] = page
            if len(page) < PAGE_SIZE:
                break
        if keep and self.files.get(gfid) is f:
            for index, page in pages.items():
                self._add_page(gfid, f, index, page)
        return pages

    # --- what changes content ---------------------------------------------------------------

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        gfid = self._open.get(fh)
        if gfid is None:
            return await self.child.write(fh, offset, data)
        self._drop(gfid)
        with self._freshness.changing(gfid):
            return await self.child.write(fh, offset, data)

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        self._drop(gfid)
        with self._freshness.changing(gfid):
            return await self.child.setattr(gfid, attr, fh)

    async def open(self, gfid: bytes, flags: int) -> int:
        if flags & os.O_TRUNC:
            self._drop(gfid)
            with self._freshness.changing(gfid):
                fh = await self.child.open(gfid, flags)
        else:
            fh = await self.child.open(gfid, flags)
        self._open[fh] = gfid
        return fh

    async def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        fh, iatt = await self.child.create(parent, name, flags, mode, uid, gid, gfid)
        self._drop(iatt.gfid)
        self._open[fh] = iatt.gfid
        with self._freshness.fetching() as token:
            self._seen(iatt, name, token)
        return fh, iatt

    async def lookup(
        self, parent: bytes, name: bytes, xdata: dict[str, Any] | None = None
    ) -> tuple[Iatt, dict[str, Any]]:
        with self._freshness.fetching() as token:
            iatt, reply = await self.child.lookup(parent, name, xdata)
            self._seen(iatt, name, token)
        return iatt, reply

    async def readdir(self, fh: int, offset: int, count: int) -> list[DirEntry]:
        with self._freshness.fetching() as token:
            entries = await self.child.readdir(fh, offset, count)
            for entry in entries:
                self._seen(entry.iatt, entry.name, token)
        return entries

    async def release(self, fh: int) -> None:
        self._open.pop(fh, None)
        await self.child.release(fh)


def _assemble(pages: dict[int, bytes], offset: int, size: int) -> bytes:
    """The requested bytes from `pages`; a short or missing page is the end of the file.
    Copies once at most (a request for exactly one whole page copies nothing)."""
    pieces: list[memoryview] = []
    taken = 0
    position = offset
    while taken < size:
        index = position // PAGE_SIZE
        page = pages.get(index)
        if page is None:
            break
        within = position - index * PAGE_SIZE
        piece = memoryview(page)[within : within + size - taken]
        if not piece:
            break
        pieces.append(piece)
        taken += len(piece)
        position += len(piece)
        if len(page) < PAGE_SIZE:
            break
    if len(pieces) == 1 and len(pieces[0]) == len(pieces[0].obj):
        return pieces[0].obj
    return b"".join(pieces)
