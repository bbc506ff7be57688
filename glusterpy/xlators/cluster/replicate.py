"""cluster/replicate (alias cluster/afr): every object on N >= 2 children, kept equal.

Modifying fops run as transactions (see `_afr_transaction`) that mark changelog counters
`trusted.afr.<child>` (data, metadata, entry; three big-endian int32) before the fop and take
the marks back afterwards for the children that applied it, so a child that missed a change is
accused by the ones that have it. Reads go to one child that holds a good copy (`_afr_read`).
Lookups compare the children and queue a heal when they disagree; a brick-side index
(features/index) lets the background crawler find what to heal when a child returns
(`_afr_shd`, `_afr_heal`, `_afr_heal_entry`). File and directory handle fops are in `_afr_fd`.

Child state: a child counts as up until it reports CHILD_DOWN or answers ENOTCONN, and is up
again after CHILD_UP or when a probe answers. This translator reports CHILD_UP to its parents
when the first child is up and CHILD_DOWN when none is.

Quorum: with quorum-type auto (more than half the children up, or exactly half including the
first) or fixed (at least quorum-count up), modifying fops fail with EROFS while the quorum is
missing; reads are still served.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from glusterpy.volfile.options import Bool, Enum, Int, Option, Str, StrList
from glusterpy.xlator import Event, Iatt, SetAttr, StatVfs, Translator, error
from glusterpy.xlators.cluster import _afr_changelog as changelog
from glusterpy.xlators.cluster._afr_changelog import DATA, ENTRY, METADATA
from glusterpy.xlators.cluster._afr_eager import EagerLocks
from glusterpy.xlators.cluster._afr_entry import EntryFops
from glusterpy.xlators.cluster._afr_fd import FdFops
from glusterpy.xlators.cluster._afr_read import InodeTable, read_from
from glusterpy.xlators.cluster._afr_shd import SelfHeal
from glusterpy.xlators.cluster._afr_transaction import (
    WHOLE,
    InodeLock,
    Transaction,
    fan_out,
    first_success,
)

log = logging.getLogger(__name__)

PENDING_PREFIX = "trusted.afr."
# How long stopping waits for the eager locks' post-ops.
STOP_TIMEOUT = 10.0
_ON = "on"


def _switch(key: str, what: str) -> Option:
    return Option(key, Bool(), _ON, what)


class Replicate(FdFops, EntryFops, Translator):
    """N-way replication over this translator's children.

    Invariants: `keys[j]` is child j's changelog xattr name; a handle of ours maps to one
    handle per child that opened it (`_afr_fd.OpenFd`); a child answering ENOTCONN is down
    until it reports up or a probe answers.
    """

    type_name = "cluster/replicate"
    options_table = (
        Option(
            "read-subvolume", Str(), None, "the child that serves reads when it has a good copy"
        ),
        Option(
            "favorite-child",
            Str(),
            None,
            "the child whose copy wins a split-brain; the other copies' changes are LOST",
        ),
        _switch("data-self-heal", "heal file content"),
        _switch("metadata-self-heal", "heal mode, owner, times and xattrs"),
        _switch("entry-self-heal", "heal directory entries"),
        _switch("data-change-log", "mark data changes in the changelog"),
        _switch("metadata-change-log", "mark metadata changes in the changelog"),
        _switch("entry-change-log", "mark entry changes in the changelog"),
        Option(
            "quorum-type",
            Enum(("none", "auto", "fixed")),
            "none",
            "when modifying fops are allowed: always, with a majority, or quorum-count up",
        ),
        Option("quorum-count", Int(min=1), None, "children that must be up with quorum-type fixed"),
        Option(
            "afr-pending-xattr",
            StrList(),
            None,
            "names in the changelog xattrs trusted.afr.<name>, one per child (default: "
            "the child volume names)",
        ),
        Option(
            "self-heal-window-size",
            Int(min=1, max=1024),
            "8",
            "128 KB blocks of a file healed under one lock",
        ),
        Option(
            "heal-timeout", Int(min=1), "600", "seconds between crawls of the bricks' heal index"
        ),
        _switch("self-heal-daemon", "heal in the background: on access and from the index"),
        _switch(
            "eager-lock",
            "keep a handle's data lock and in-flight mark across its writes, while every "
            "child takes them all (see post-op-delay-secs)",
        ),
        Option(
            "post-op-delay-secs",
            Int(min=0, max=60),
            "1",
            "seconds a handle with no writes keeps its eager lock (0: none); another client "
            "wanting the file's data lock waits at most this long",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        if len(self.children) < 2:
            raise ValueError("cluster/replicate needs at least two subvolumes")
        names = [child.name for child in self.children]
        pending_names = options.get("afr-pending-xattr") or names
        if len(pending_names) != len(names):
            raise ValueError(
                f"afr-pending-xattr names {len(pending_names)} children, but there are {len(names)}"
            )
        if "dirty" in pending_names:
            raise ValueError("'dirty' cannot name a child: trusted.afr.dirty is the in-flight mark")
        self.keys = [PENDING_PREFIX + n for n in pending_names]
        self.all_keys = [*self.keys, changelog.DIRTY_KEY]
        self.read_subvolume = self._child_index("read-subvolume", names)
        self.favorite_child = self._child_index("favorite-child", names)
        self.self_heal = [options[f"{k}-self-heal"] for k in changelog.KIND_NAMES]
        self.change_log = [options[f"{k}-change-log"] for k in changelog.KIND_NAMES]
        self.quorum_type = options["quorum-type"]
        self.quorum_count = options.get("quorum-count")
        if self.quorum_type == "fixed" and not self.quorum_count:
            raise ValueError("quorum-type fixed needs quorum-count")
        self.heal_window_blocks = options["self-heal-window-size"]
        self.heal_timeout = options["heal-timeout"]
        self.background_heal = options["self-heal-daemon"]
        self.data_domain = name
        self.metadata_domain = name + ".metadata"
        self.entry_domain = name
        self._up: list[bool | None] = [None] * len(self.children)
        self._announced_up = False
        self._split_brains_logged: set[tuple[bytes, str]] = set()
        self.inodes = InodeTable(self.keys)
        self.shd = SelfHeal(self)
        self._nursery: trio.Nursery | None = None
        self._init_fds()
        self.post_op_delay = options["post-op-delay-secs"] if options["eager-lock"] else 0
        self.eager = EagerLocks(self)
        # Counts the changes of child state: an eager hold lives within one.
        self.child_epoch = 0

    def _child_index(self, key: str, names: list[str]) -> int | None:
        value = self.options.get(key)
        if value is None:
            return None
        if value not in names:
            raise ValueError(f"option {key}: '{value}' is not a subvolume of this volume")
        return names.index(value)

    # --- lifecycle, child state and quorum --------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self.shd.run)

    def in_background(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` in this translator's nursery (inline-free); before start, it never waits."""
        if self._nursery is None:
            raise RuntimeError(f"{self.name} is not started")
        self._nursery.start_soon(work)

    async def stop(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
            await self.eager.end_all()

    def notify(self, event: Event, child: Translator) -> None:
        i = self.children.index(child)
        up = event is Event.CHILD_UP
        if self._up[i] != up:
            log.info("%s: subvolume %s is %s", self.name, child.name, "up" if up else "down")
            self.child_epoch += 1
        self._up[i] = up
        if up:
            self.shd.wake()
        self._announce()

    def child_failed(self, i: int, exc: OSError) -> None:
        """A call on child i failed; ENOTCONN means the child is gone."""
        if exc.errno == errno.ENOTCONN and self._up[i] is not False:
            log.warning("%s: subvolume %s is not connected", self.name, self.children[i].name)
            self._up[i] = False
            self.child_epoch += 1
            self._announce()

    def child_answered(self, i: int) -> None:
        """A probe of a child marked down succeeded."""
        if self._up[i] is False:
            log.info("%s: subvolume %s answers again", self.name, self.children[i].name)
            self._up[i] = True
            self.child_epoch += 1
            self.shd.wake()
            self._announce()

    def _announce(self) -> None:
        any_up = any(state is True for state in self._up)
        all_down = all(state is False for state in self._up)
        if any_up and not self._announced_up:
            self._announced_up = True
            self.emit(Event.CHILD_UP)
        elif all_down and self._announced_up:
            self._announced_up = False
            self.emit(Event.CHILD_DOWN)
        elif all_down and None not in self._up:
            self.emit(Event.CHILD_DOWN)

    def is_up(self, i: int) -> bool:
        return self._up[i] is not False

    def up_children(self) -> list[int]:
        return [i for i in range(len(self.children)) if self.is_up(i)]

    def known_states(self) -> list[bool | None]:
        """Each child's state: True up, False down, None not reported yet."""
        return list(self._up)

    def has_quorum(self, count: int | None = None) -> bool:
        up = self.up_children()
        n = len(up) if count is None else count
        if self.quorum_type == "none":
            return True
        if self.quorum_type == "fixed":
            return n >= self.quorum_count
        total = len(self.children)
        return 2 * n > total or (2 * n == total and 0 in up)

    def check_quorum(self) -> None:
        if not self.has_quorum():
            raise error(
                errno.EROFS,
                f"{self.name}: quorum not met "
                f"({len(self.up_children())} of {len(self.children)} subvolumes up)",
            )

    def note_outcome(self, kind: int, targets: Sequence[bytes], applied: Sequence[int]) -> None:
        """After a transaction: only the children that applied it have a good copy now."""
        for gfid in targets:
            self.inodes.narrow(gfid, kind, applied)

    def report_split_brain(self, gfid: bytes, what: str) -> None:
        """Log a split-brain once per object and kind; it stays until resolved."""
        if (gfid, what) not in self._split_brains_logged:
            self._split_brains_logged.add((gfid, what))
            log.error(
                "%s: %s split-brain on %s: the copies blame each other; resolve it with "
                "'glusterpy heal split-brain'",
                self.name,
                what,
                gfid.hex(),
            )

    # --- transactions on one object -----------------------------------------------------------

    async def modify(self, kind: int, gfid: bytes, call, children=None, lock_range=WHOLE):
        """Run `call` on the children as a data or metadata transaction on `gfid`."""
        domain = self.data_domain if kind == DATA else self.metadata_domain
        txn = Transaction(self, kind, [gfid], [InodeLock(domain, gfid, *lock_range)])
        return await txn.run(call, children)

    # --- inode fops -----------------------------------------------------------------------------

    async def lookup(
        self, parent: bytes, name: bytes, xdata: dict[str, Any] | None = None
    ) -> tuple[Iatt, dict[str, Any]]:
        asked = dict(xdata or {})
        wanted = asked.get("xattrs")
        extra = list(wanted) if isinstance(wanted, list | tuple) else []
        query = dict(asked, xattrs=self.all_keys + extra)
        results = await fan_out(
            self, self.up_children(), lambda i, child: child.lookup(parent, name, query)
        )
        good = {i: r for i, r in results.items() if not isinstance(r, OSError)}
        if not good:
            raise _lookup_error(results)
        gfid = self._agreed_gfid(parent, name, good)
        good = {i: r for i, r in good.items() if r[0].gfid == gfid}
        changelogs = {i: r[1].get("xattrs", {}) for i, r in good.items()}
        state = self.inodes.record(gfid, changelogs)
        if state.verdicts[METADATA].split_brain and self.favorite_child not in good:
            self.report_split_brain(gfid, "metadata")
            raise error(errno.EIO, f"{self.name}: metadata split-brain")
        readable = [i for i in sorted(good) if i in state.readable(DATA)] or sorted(good)
        iatt, reply = good[readable[0]]
        self._heal_if_needed(parent, gfid, state, good, results)
        return iatt, _strip_changelog(reply, extra, self.all_keys)

    def _agreed_gfid(self, parent: bytes, name: bytes, good: dict[int, Any]) -> bytes:
        gfids = {r[0].gfid for r in good.values()}
        if len(gfids) == 1:
            return gfids.pop()
        parent_state = self.inodes.get(parent)
        trusted = sorted(good) if parent_state is None else sorted(parent_state.readable(ENTRY))
        chosen = {good[i][0].gfid for i in trusted if i in good}
        self.shd.schedule(parent)
        if len(chosen) == 1 and parent_state is not None and parent_state.verdicts[ENTRY].sinks:
            return chosen.pop()
        self.report_split_brain(parent, "gfid of " + name.decode(errors="replace"))
        raise error(errno.EIO, f"{self.name}: {name!r} has different gfids on the subvolumes")

    def _heal_if_needed(self, parent: bytes, gfid: bytes, state, good, results) -> None:
        if any(isinstance(r, OSError) and r.errno == errno.ENOENT for r in results.values()):
            self.shd.schedule(parent)
        if any(v.sinks for v in state.verdicts) or _attributes_differ(good):
            self.shd.schedule(gfid)

    async def stat(self, gfid: bytes) -> Iatt:
        return await read_from(self, gfid, DATA, lambda i, child: child.stat(gfid))

    async def setattr(self, gfid: bytes, attr: SetAttr, fh: int | None = None) -> Iatt:
        handles = self.fd_handles(fh) if fh is not None else {}
        children = list(handles) if fh is not None else None
        result: Iatt | None = None
        if attr.size is not None:
            size_only = SetAttr(size=attr.size)

            async def truncate(i: int, child: Translator) -> Iatt:
                return await child.setattr(gfid, size_only, handles.get(i))

            results = await self.modify(DATA, gfid, truncate, children, (attr.size, 0))
            result = first_success(results)
        rest = SetAttr(attr.mode, attr.uid, attr.gid, None, attr.atime_ns, attr.mtime_ns)
        if rest != SetAttr():

            async def change(i: int, child: Translator) -> Iatt:
                return await child.setattr(gfid, rest, handles.get(i))

            result = first_success(await self.modify(METADATA, gfid, change, children))
        return result if result is not None else await self.stat(gfid)

    async def readlink(self, gfid: bytes) -> bytes:
        return await read_from(self, gfid, DATA, lambda i, child: child.readlink(gfid))

    async def statfs(self, gfid: bytes) -> StatVfs:
        return await read_from(self, gfid, DATA, lambda i, child: child.statfs(gfid))

    # --- extended attributes --------------------------------------------------------------------

    async def getxattr(self, gfid: bytes, name: str) -> bytes:
        return await read_from(self, gfid, METADATA, lambda i, child: child.getxattr(gfid, name))

    async def listxattr(self, gfid: bytes) -> list[str]:
        names = await read_from(self, gfid, METADATA, lambda i, child: child.listxattr(gfid))
        return [n for n in names if not n.startswith(PENDING_PREFIX)]

    async def setxattr(self, gfid: bytes, name: str, value: bytes, flags: int = 0) -> None:
        _refuse_changelog(name)
        first_success(
            await self.modify(
                METADATA, gfid, lambda i, child: child.setxattr(gfid, name, value, flags)
            )
        )

    async def removexattr(self, gfid: bytes, name: str) -> None:
        _refuse_changelog(name)
        first_success(
            await self.modify(METADATA, gfid, lambda i, child: child.removexattr(gfid, name))
        )

    async def xattrop(self, gfid: bytes, op: str, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        for name in xattrs:
            _refuse_changelog(name)
        results = await fan_out(
            self, self.up_children(), lambda i, child: child.xattrop(gfid, op, xattrs)
        )
        return first_success(results)


def _refuse_changelog(name: str) -> None:
    if name.startswith(PENDING_PREFIX):
        raise error(errno.EPERM, f"{name} is kept by cluster/replicate")


def _lookup_error(results: dict[int, Any]) -> OSError:
    errors = [r for r in results.values() if isinstance(r, OSError)]
    for exc in errors:
        if exc.errno == errno.ENOENT:
            return exc
    for exc in errors:
        if exc.errno != errno.ENOTCONN:
            return exc
    return errors[0] if errors else error(errno.ENOTCONN, "no subvolume is up")


def _attributes_differ(good: dict[int, Any]) -> bool:
    iatts = [r[0] for r in good.values()]
    first = iatts[0]
    return any(
        (i.mode, i.uid, i.gid, i.size) != (first.mode, first.uid, first.gid, first.size)
        for i in iatts[1:]
        if not stat.S_ISDIR(first.mode)
    ) or any((i.mode, i.uid, i.gid) != (first.mode, first.uid, first.gid) for i in iatts[1:])


def _strip_changelog(reply: dict[str, Any], asked: list[str], keys: list[str]) -> dict[str, Any]:
    xattrs = reply.get("xattrs")
    if xattrs is None:
        return reply
    if not asked:
        return {k: v for k, v in reply.items() if k != "xattrs"}
    kept = {k: v for k, v in xattrs.items() if k in asked or k not in keys}
    return dict(reply, xattrs=kept)
