"""performance/md-cache (alias performance/stat-prefetch): cache attributes for a short time.

Attributes (iatts) answered by lookup, stat, fstat and readdir are kept per gfid for
md-cache-timeout seconds and answer later stat, fstat and plain lookups (name -> gfid kept just
as long). Chosen xattrs (file capabilities by default; POSIX ACLs and the SELinux label on
request), including "no such attribute", are kept just as long.

Invariants:
- Never stale for longer than the timeout: an entry is served only within md-cache-timeout
  seconds of the answer it came from; another client's change is seen after that at the latest.
- Never stale for our own client: every modifying fop passing through drops what it changes
  (the object, its parent directories, the names involved) before it goes down, and holds
  those keys as changing (`Freshness`), so an answer fetched across the change is not cached.
  Unlink and rename find the objects they change by the names seen (lookup, readdir, create,
  link, rename); a name found missing by its last lookup names nothing we cache. When nothing
  is known of a name, everything is dropped.
- Bounded: at most MAX_ENTRIES attributes, names and xattrs each, least recently used first out.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import trio

from glusterpy.volfile.options import Bool, Int, Option
from glusterpy.xlator import DirEntry, Iatt, SetAttr, Translator, error
from glusterpy.xlators.performance._cache import Freshness, TimedLru

log = logging.getLogger(__name__)

MAX_ENTRIES = 65_536
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
SELINUX_XATTRS = ("security.selinux",)
# The kernel asks for this before every write to a file, to know whether to drop it.
CAPABILITY_XATTRS = ("security.capability",)


class MdCache(Translator):
    """Attribute, name and xattr caches with timeouts; see the module docstring."""

    type_name = "performance/md-cache"
    options_table = (
        Option(
            "md-cache-timeout",
            Int(min=0, max=600),
            "1",
            aliases=("cache-timeout",),
            help="Seconds an answer may be served from the cache; 0 caches nothing.",
        ),
        Option(
            "cache-posix-acl",
            Bool(),
            "off",
            help="Also cache the POSIX ACL xattrs (and their absence).",
        ),
        Option(
            "cache-capability-xattrs",
            Bool(),
            "on",
            help="Also cache the file capabilities xattr (and its absence).",
        ),
        Option(
            "cache-selinux",
            Bool(),
            "off",
            help="Also cache the SELinux label xattr (and its absence).",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        timeout = options.get("md-cache-timeout")
        self.timeout = 1 if timeout is None else timeout
        chosen = (
            (ACL_XATTRS, options.get("cache-posix-acl", False)),
            (SELINUX_XATTRS, options.get("cache-selinux", False)),
            (CAPABILITY_XATTRS, options.get("cache-capability-xattrs", True)),
        )
        self.cached_xattrs = frozenset(name for names, on in chosen if on for name in names)
        self.iatts: TimedLru[Iatt] = TimedLru(self.timeout, MAX_ENTRIES)
        self.names: TimedLru[bytes] = TimedLru(self.timeout, MAX_ENTRIES)
        # An xattr's value, or None for "no such attribute".
        self.xattrs: TimedLru[tuple[bytes | None]] = TimedLru(self.timeout, MAX_ENTRIES)
        # Which gfid a name had, kept past the timeout so that unlink and rename know what
        # they change; bounded like the caches.
        self._known_names: OrderedDict[tuple[bytes, bytes], bytes | None] = OrderedDict()
        self._open: dict[int, bytes] = {}
        self._freshness = Freshness()

    async def start(self, nursery: trio.Nursery) -> None:
        log.info(
            "md-cache %s: attributes kept %d s; xattrs kept: %s",
            self.name,
            self.timeout,
            ", ".join(sorted(self.cached_xattrs)) or "none",
        )

    # --- filling and dropping ---------------------------------------------------------------

    def _keep(self, iatt: Iatt, token: int) -> None:
        if self._freshness.fresh(iatt.gfid, token):
            self.iatts.put(iatt.gfid, iatt)

    def _know(self, parent: bytes, name: bytes, gfid: bytes | None) -> None:
        """Remember which gfid `name` has (None: none, it was not there), for invalidation
        only; nothing is served from this."""
        self._known_names[(parent, name)] = gfid
        self._known_names.move_to_end((parent, name))
        while len(self._known_names) > MAX_ENTRIES:
            self._known_names.popitem(last=False)

    def _keep_name(self, parent: bytes, name: bytes, gfid: bytes, token: int) -> None:
        self._know(parent, name, gfid)
        if self._freshness.fresh(parent, token) and self._freshness.fresh(gfid, token):
            self.names.put((parent, name), gfid)

    def _drop(self, *gfids: bytes) -> None:
        for gfid in gfids:
            self.iatts.pop(gfid)
            for xattr in self.cached_xattrs:
                self.xattrs.pop((gfid, xattr))

    def _drop_name(self, parent: bytes, name: bytes) -> bytes | None:
        """Forget `name` in `parent`; the gfid it had when known, else None. When nothing at
        all is known of the name (not even that it was missing), every cached attribute is
        dropped, since the object it names cannot be told."""
        self.names.pop((parent, name))
        if (parent, name) in self._known_names:
            return self._known_names.pop((parent, name))
        self.iatts.clear()
        self.xattrs.clear()
        self._freshness.clear_all()
        return None

    def _gfid_of(self, fh: int) -> bytes | None:
        return self._open.get(fh)

    # --- inode fops -------------------------------------------------------------------------

    async def lookup(
        self, parent: bytes, name: bytes, xdata: dict[str, Any] | None = None
    ) -> tuple[Iatt, dict[str, Any]]:
        if not xdata:
            gfid = self.names.get((parent, name))
            iatt = None if gfid is None else self.iatts.get(gfid)
            if iatt is not None:
                return iatt, {}
        with self._freshness.fetching() as token:
            try:
                iatt, reply = await self.child.lookup(parent, name, xdata)
            except FileNotFoundError:
                if self._freshness.fresh(parent, token):
                    self._know(parent, name, None)
                raise
            self._keep(iatt, token)
            self._keep_name(parent, name, iatt.gfid, token)
        return iatt, reply

    async def stat(self, gfid: bytes) -> Iatt:
        iatt = self.iatts.get(gfid)
        if iatt is not None:
            return iatt
        with self._freshness.fetching() as token:
            iatt = await self.child.stat(gfid)
            self._keep(iatt, token)
        return iatt

    async def fstat(self, fh: int) -> Iatt:
        gfid = self._gfid_of(fh)
        iatt = None if gfid is None else self.iatts.get(gfid)
        if iatt is not None:
            return iatt
        with self._freshness.fetching() as token:
            iatt = await self.child.fstat(fh)
            self._keep(iatt, token)
        return iatt

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        self._drop(gfid)
        with self._freshness.changing(gfid):
            return await self.child.setattr(gfid, attr, fh)

    # --- entry fops -------------------------------------------------------------------------

    async def _new_entry(self, parent: bytes, name: bytes, fop: str, *args: Any) -> Any:
        """Run an entry fop that adds `name` to `parent`."""
        self._drop(parent)
        self.names.pop((parent, name))
        with self._freshness.changing(parent):
            result = await getattr(self.child, fop)(parent, name, *args)
        self._know(parent, name, (result[1] if fop == "create" else result).gfid)
        return result

    async def mknod(self, parent, name, mode, rdev, uid, gid, gfid) -> Iatt:
        return await self._new_entry(parent, name, "mknod", mode, rdev, uid, gid, gfid)

    async def mkdir(self, parent, name, mode, uid, gid, gfid) -> Iatt:
        return await self._new_entry(parent, name, "mkdir", mode, uid, gid, gfid)

    async def symlink(self, parent, name, target, uid, gid, gfid) -> Iatt:
        return await self._new_entry(parent, name, "symlink", target, uid, gid, gfid)

    async def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        fh, iatt = await self._new_entry(parent, name, "create", flags, mode, uid, gid, gfid)
        self._open[fh] = iatt.gfid
        return fh, iatt

    async def link(self, gfid: bytes, parent: bytes, name: bytes) -> Iatt:
        self._drop(gfid, parent)
        self.names.pop((parent, name))
        with self._freshness.changing(gfid, parent):
            iatt = await self.child.link(gfid, parent, name)
        self._know(parent, name, gfid)
        return iatt

    async def _remove_entry(self, parent: bytes, name: bytes, fop: str) -> None:
        gfid = self._drop_name(parent, name)
        keys = (parent,) if gfid is None else (parent, gfid)
        self._drop(*keys)
        with self._freshness.changing(*keys):
            await getattr(self.child, fop)(parent, name)

    async def unlink(self, parent: bytes, name: bytes) -> None:
        await self._remove_entry(parent, name, "unlink")

    async def rmdir(self, parent: bytes, name: bytes) -> None:
        await self._remove_entry(parent, name, "rmdir")

    async def rename(
        self, oldparent: bytes, oldname: bytes, newparent: bytes, newname: bytes, flags: int = 0
    ) -> None:
        moved = self._drop_name(oldparent, oldname)
        replaced = self._drop_name(newparent, newname)
        keys = {oldparent, newparent} | {g for g in (moved, replaced) if g is not None}
        self._drop(*keys)
        with self._freshness.changing(*keys):
            await self.child.rename(oldparent, oldname, newparent, newname, flags)
        if moved is not None:
            self._know(newparent, newname, moved)

    # --- file fops --------------------------------------------------------------------------

    async def open(self, gfid: bytes, flags: int) -> int:
        if flags & os.O_TRUNC:
            self._drop(gfid)
            with self._freshness.changing(gfid):
                fh = await self.child.open(gfid, flags)
        else:
            fh = await self.child.open(gfid, flags)
        self._open[fh] = gfid
        return fh

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        gfid = self._gfid_of(fh)
        if gfid is None:
            self.iatts.clear()
            self._freshness.clear_all()
            return await self.child.write(fh, offset, data)
        self._drop(gfid)
        with self._freshness.changing(gfid):
            return await self.child.write(fh, offset, data)

    async def release(self, fh: int) -> None:
        self._open.pop(fh, None)
        await self.child.release(fh)

    # --- directories ------------------------------------------------------------------------

    async def opendir(self, gfid: bytes) -> int:
        fh = await self.child.opendir(gfid)
        self._open[fh] = gfid
        return fh

    async def readdir(self, fh: int, offset: int, count: int) -> list[DirEntry]:
        parent = self._gfid_of(fh)
        with self._freshness.fetching() as token:
            entries = await self.child.readdir(fh, offset, count)
            for entry in entries:
                if entry.name in (b".", b".."):
                    continue
                self._keep(entry.iatt, token)
                if parent is not None:
                    self._keep_name(parent, entry.name, entry.iatt.gfid, token)
        return entries

    async def releasedir(self, fh: int) -> None:
        self._open.pop(fh, None)
        await self.child.releasedir(fh)

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, gfid: bytes, name: str) -> bytes:
        if name not in self.cached_xattrs:
            return await self.child.getxattr(gfid, name)
        cached = self.xattrs.get((gfid, name))
        if cached is not None:
            if cached[0] is None:
                raise error(errno.ENODATA, f"no attribute {name}")
            return cached[0]
        with self._freshness.fetching() as token:
            try:
                value = await self.child.getxattr(gfid, name)
            except OSError as e:
                if e.errno == errno.ENODATA and self._freshness.fresh(gfid, token):
                    self.xattrs.put((gfid, name), (None,))
                raise
            if self._freshness.fresh(gfid, token):
                self.xattrs.put((gfid, name), (value,))
        return value

    async def setxattr(self, gfid: bytes, name: str, value: bytes, flags: int = 0) -> None:
        self._drop(gfid)
        with self._freshness.changing(gfid):
            await self.child.setxattr(gfid, name, value, flags)

    async def removexattr(self, gfid: bytes, name: str) -> None:
        self._drop(gfid)
        with self._freshness.changing(gfid):
            await self.child.removexattr(gfid, name)

    async def xattrop(self, gfid: bytes, op: str, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        self._drop(gfid)
        with self._freshness.changing(gfid):
            return await self.child.xattrop(gfid, op, xattrs)
