"""features/locks: POSIX byte-range locks, flock locks, inodelk and entrylk, kept in memory.

Three independent tables: `lk` locks per gfid (POSIX and flock kinds never conflict with each
other), `inodelk` range locks per (domain, gfid), and `entrylk` name locks per (domain,
directory gfid). Every other fop passes down; open, create, release and flush are watched to
map handles to gfids and to drop locks when a descriptor is closed.

Invariants:
- A holder never conflicts with itself; a POSIX holder is the lock owner, a flock holder the
  open file (its handle). A holder's POSIX locks on one inode never overlap: a new lock
  replaces the overlapped parts and merges with adjacent locks of the same type.
- A blocking fcntl lock that would close a cycle of owners waiting on each other fails with
  EDEADLK instead of waiting forever.
- Blocked requests wait in FIFO order per key; whenever locks change, each waiter that no
  longer conflicts with a held lock is granted, in order. A cancelled waiter leaves its queue
  at once (trio abort), so it never holds anything.
- Owners are prefixed by protocol/server with `<client>:`, which is how a disconnected
  client's locks and waiters are found.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import outcome
import trio

from glusterpy.volfile.options import Bool, Option
from glusterpy.xlator import F_CANCELLK, Flock, Iatt, Translator, error

log = logging.getLogger(__name__)

END = 1 << 64  # exclusive end of a lock that runs to the end of the file
L = TypeVar("L")


@dataclass(slots=True)
class RangeLock:
    """A held or requested byte range [start, end) of type F_RDLCK, F_WRLCK or F_UNLCK."""

    type: int
    start: int
    end: int
    owner: bytes
    pid: int
    holder: Hashable
    flock: bool = False

    def overlaps(self, other: RangeLock) -> bool:
        return self.start < other.end and other.start < self.end

    def to_flock(self) -> Flock:
        length = 0 if self.end >= END else self.end - self.start
        return Flock(self.type, self.start, length, self.pid, self.owner, self.flock)


@dataclass(slots=True)
class EntryLock:
    """A lock on one name in a directory, or on the whole directory when `name` is None."""

    name: bytes | None
    owner: bytes


def range_conflict(held: RangeLock, req: RangeLock) -> bool:
    if req.type == fcntl.F_UNLCK:
        return False
    if held.flock != req.flock or held.holder == req.holder or not held.overlaps(req):
        return False
    return fcntl.F_WRLCK in (held.type, req.type)


def range_apply(held: list[RangeLock], req: RangeLock) -> list[RangeLock]:
    """The holder's locks after `req`: overlapped parts replaced (split), neighbours merged."""
    others, mine = [], []
    for lock in held:
        if lock.holder != req.holder or lock.flock != req.flock:
            others.append(lock)
        elif not lock.overlaps(req):
            mine.append(lock)
        else:
            if lock.start < req.start:
                mine.append(dataclasses.replace(lock, end=req.start))
            if lock.end > req.end:
                mine.append(dataclasses.replace(lock, start=req.end))
    if req.type != fcntl.F_UNLCK:
        mine.append(req)
    mine.sort(key=lambda lock: lock.start)
    merged: list[RangeLock] = []
    for lock in mine:
        last = merged[-1] if merged else None
        if last is not None and last.type == lock.type and last.end >= lock.start:
            merged[-1] = dataclasses.replace(last, end=max(last.end, lock.end))
        else:
            merged.append(lock)
    return others + merged


def entry_conflict(held: EntryLock, req: EntryLock) -> bool:
    if held.owner == req.owner:
        return False
    return held.name is None or req.name is None or held.name == req.name


def entry_apply(held: list[EntryLock], req: EntryLock) -> list[EntryLock]:
    return [*held, req]


@dataclass(eq=False, slots=True)
class _Waiter(Generic[L]):
    """A blocked request and the task to reschedule when it is granted or refused."""

    request: L
    task: trio.lowlevel.Task


class LockTable(Generic[L]):
    """Held locks and FIFO waiters per key, for one kind of lock (given by two functions).

    `conflict(held, request)` says whether a held lock blocks a request; `apply(held, request)`
    returns the new held list once a request is granted. Keys without locks or waiters are
    removed, so the table holds nothing for idle inodes.
    """

    def __init__(
        self,
        conflict: Callable[[L, L], bool],
        apply: Callable[[list[L], L], list[L]],
        holder_of: Callable[[L], Hashable] | None = None,
    ):
        self._conflict = conflict
        self._apply = apply
        self._holder_of = holder_of
        self._held: dict[Hashable, list[L]] = {}
        self._waiters: dict[Hashable, list[_Waiter[L]]] = {}

    def held(self, key: Hashable) -> list[L]:
        return list(self._held.get(key, ()))

    def waiting(self, key: Hashable) -> int:
        return len(self._waiters.get(key, ()))

    def is_empty(self) -> bool:
        return not self._held and not self._waiters

    def find_conflict(self, key: Hashable, request: L) -> L | None:
        for lock in self._held.get(key, ()):
            if self._conflict(lock, request):
                return lock
        return None

    def try_acquire(self, key: Hashable, request: L) -> bool:
        """Grant `request` now if nothing conflicts; False otherwise."""
        if self.find_conflict(key, request) is not None:
            return False
        self.change(key, lambda held: self._apply(held, request))
        return True

    async def acquire(self, key: Hashable, request: L) -> None:
        """Grant `request`, waiting in line behind earlier waiters while it conflicts."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.try_acquire(key, request):
            return
        if self._holder_of is not None and self._would_deadlock(key, request):
            raise error(errno.EDEADLK, "waiting would deadlock")
        waiter = _Waiter(request, trio.lowlevel.current_task())
        self._waiters.setdefault(key, []).append(waiter)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._remove_waiter(key, waiter)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _blockers(self, key: Hashable, request: L) -> list[Hashable]:
        assert self._holder_of is not None
        held = self._held.get(key, ())
        return [self._holder_of(lock) for lock in held if self._conflict(lock, request)]

    def _would_deadlock(self, key: Hashable, request: L) -> bool:
        """True when the holders blocking `request` wait, through a chain, for its holder."""
        assert self._holder_of is not None
        me = self._holder_of(request)
        seen: set[Hashable] = set()
        frontier = self._blockers(key, request)
        while frontier:
            holder = frontier.pop()
            if holder == me:
                return True
            if holder in seen:
                continue
            seen.add(holder)
            for wkey, queue in self._waiters.items():
                for waiter in queue:
                    if self._holder_of(waiter.request) == holder:
                        frontier += self._blockers(wkey, waiter.request)
        return False

    def change(self, key: Hashable, update: Callable[[list[L]], list[L]]) -> None:
        """Replace the held locks of `key` with `update(held)`, then grant what now fits."""
        held = update(self.held(key))
        if held:
            self._held[key] = held
        else:
            self._held.pop(key, None)
        self._grant_waiters(key)

    def drop(self, doomed: Callable[[L], bool], err: OSError) -> int:
        """Remove every held lock and waiter for which `doomed` is true; waiters get `err`."""
        count = 0
        for key in list(self._waiters):
            for waiter in list(self._waiters.get(key, ())):
                if doomed(waiter.request):
                    self._remove_waiter(key, waiter)
                    trio.lowlevel.reschedule(waiter.task, outcome.Error(err))
                    count += 1
        for key in list(self._held):
            before = self._held[key]
            kept = [lock for lock in before if not doomed(lock)]
            count += len(before) - len(kept)
            if len(kept) != len(before):
                self.change(key, lambda _, kept=kept: kept)
        return count

    def withdraw(self, key: Hashable, which: Callable[[L], bool], err: OSError) -> int:
        """End the waiting requests on `key` for which `which` is true with `err`."""
        count = 0
        for waiter in list(self._waiters.get(key, ())):
            if which(waiter.request):
                self._remove_waiter(key, waiter)
                trio.lowlevel.reschedule(waiter.task, outcome.Error(err))
                count += 1
        self._grant_waiters(key)
        return count

    def _remove_waiter(self, key: Hashable, waiter: _Waiter[L]) -> None:
        queue = self._waiters.get(key, [])
        if waiter in queue:
            queue.remove(waiter)
        if not queue:
            self._waiters.pop(key, None)

    def _grant_waiters(self, key: Hashable) -> None:
        for waiter in list(self._waiters.get(key, ())):
            if self.find_conflict(key, waiter.request) is None:
                self._remove_waiter(key, waiter)
                held = self._apply(self.held(key), waiter.request)
                self._held[key] = held
                trio.lowlevel.reschedule(waiter.task, outcome.Value(None))


LOCK_TYPES = (fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK)
ENTRYLK_OPS = ("lock", "trylock", "unlock")


def range_request(lock: Flock, holder: Hashable) -> RangeLock:
    """A RangeLock for a Flock request; flock(2) locks always cover the whole file."""
    if lock.type not in LOCK_TYPES:
        raise error(errno.EINVAL, f"lock type {lock.type}")
    if lock.flock:
        return RangeLock(lock.type, 0, END, lock.owner, lock.pid, holder, True)
    if lock.start < 0 or lock.length < 0:
        raise error(errno.EINVAL, "negative lock start or length")
    end = END if lock.length == 0 else lock.start + lock.length
    return RangeLock(lock.type, lock.start, end, lock.owner, lock.pid, holder)


class Locks(Translator):
    """Lock tables of one brick; every other fop passes down unchanged.

    Invariants: `_fh_gfid` maps each handle opened through us to its gfid until release; all
    state is touched only from trio tasks (no threads), so no lock guards the tables.
    """

    type_name = "features/locks"
    options_table = (
        Option(
            "mandatory-locks",
            Bool(),
            "off",
            aliases=("mandatory",),
            help="Accepted for compatibility with GlusterFS 2.0; mandatory locking is not "
            "enforced (locks are advisory).",
        ),
        Option("trace", Bool(), "off", help="Log every lock request and its outcome at INFO."),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self._level = logging.INFO if options.get("trace") else logging.DEBUG
        self._fh_gfid: dict[int, bytes] = {}
        # Only fcntl locks detect deadlocks (EDEADLK, as the kernel does); replicate takes
        # inodelk and entrylk in a fixed order, so those tables need not.
        self.posix = LockTable(range_conflict, range_apply, lambda lock: lock.holder)
        self.inode = LockTable(range_conflict, range_apply)
        self.entry = LockTable(entry_conflict, entry_apply)

    def _log(self, fmt: str, *args: Any) -> None:
        log.log(self._level, "%s: " + fmt, self.name, *args)

    # --- handles ----------------------------------------------------------------------------

    async def open(self, gfid: bytes, flags: int) -> int:
        fh = await self.child.open(gfid, flags)
        self._fh_gfid[fh] = gfid
        return fh

    async def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        fh, iatt = await self.child.create(parent, name, flags, mode, uid, gid, gfid)
        self._fh_gfid[fh] = iatt.gfid
        return fh, iatt

    async def flush(self, fh: int, lk_owner: bytes) -> None:
        gfid = self._fh_gfid.get(fh)
        if gfid is not None:
            self._drop_posix(gfid, lambda lock: not lock.flock and lock.holder == lk_owner)
        await self.child.flush(fh, lk_owner)

    async def release(self, fh: int) -> None:
        gfid = self._fh_gfid.pop(fh, None)
        if gfid is not None:
            self._drop_posix(gfid, lambda lock: lock.flock and lock.holder == fh)
        await self.child.release(fh)

    def _drop_posix(self, gfid: bytes, doomed: Callable[[RangeLock], bool]) -> None:
        before = len(self.posix.held(gfid))
        self.posix.change(gfid, lambda held: [lock for lock in held if not doomed(lock)])
        if len(self.posix.held(gfid)) != before:
            self._log("dropped locks on close of gfid %s", gfid.hex())

    # --- lk ---------------------------------------------------------------------------------

    async def lk(self, fh: int, cmd: int, lock: Flock) -> Flock:
        gfid = self._fh_gfid.get(fh)
        if gfid is None:
            raise error(errno.EBADF, f"no open file with handle {fh} for lk")
        request = range_request(lock, fh if lock.flock else lock.owner)
        self._log(
            "lk cmd %d type %d [%d, %d) gfid %s",
            cmd,
            lock.type,
            request.start,
            request.end,
            gfid.hex(),
        )
        if cmd == fcntl.F_GETLK:
            found = self.posix.find_conflict(gfid, request)
            if found is None:
                return dataclasses.replace(lock, type=fcntl.F_UNLCK)
            return found.to_flock()
        if cmd == F_CANCELLK:
            withdrawn = self.posix.withdraw(
                gfid,
                lambda waiting: (
                    waiting.holder == request.holder
                    and waiting.flock == request.flock
                    and waiting.overlaps(request)
                ),
                error(errno.EINTR, "lock request withdrawn by its client"),
            )
            self._log("withdrew %d waiting lock requests of %r", withdrawn, request.holder)
            return lock
        await self._set(self.posix, gfid, cmd, request)
        return lock

    async def _set(self, table: LockTable, key: Hashable, cmd: int, request: RangeLock) -> None:
        if cmd == fcntl.F_SETLK:
            if not table.try_acquire(key, request):
                self._log("lock on %r refused: conflicting lock held", key)
                raise error(errno.EAGAIN, "conflicting lock held")
        elif cmd == fcntl.F_SETLKW:
            await table.acquire(key, request)
        else:
            raise error(errno.EINVAL, f"lock command {cmd}")
        self._log(
            "lock type %d [%d, %d) on %r granted", request.type, request.start, request.end, key
        )

    # --- inodelk and entrylk ----------------------------------------------------------------

    async def inodelk(self, domain: str, gfid: bytes, cmd: int, lock: Flock) -> None:
        request = range_request(dataclasses.replace(lock, flock=False), lock.owner)
        self._log("inodelk %s cmd %d type %d gfid %s", domain, cmd, lock.type, gfid.hex())
        await self._set(self.inode, (domain, gfid), cmd, request)

    async def entrylk(
        self, domain: str, parent: bytes, name: bytes | None, op: str, owner: bytes
    ) -> None:
        if op not in ENTRYLK_OPS:
            raise error(errno.EINVAL, f"entrylk op {op!r}")
        key = (domain, parent)
        request = EntryLock(name, owner)
        self._log("entrylk %s %s %r in %s", domain, op, name, parent.hex())
        if op == "unlock":
            self.entry.change(key, lambda held: _without_one(held, request))
        elif op == "trylock":
            if not self.entry.try_acquire(key, request):
                raise error(errno.EAGAIN, "entry is locked")
        else:
            await self.entry.acquire(key, request)

    # --- disconnects ------------------------------------------------------------------------

    async def client_disconnect(self, client: str) -> None:
        prefix = client.encode() + b":"

        def doomed(lock: RangeLock | EntryLock) -> bool:
            return lock.owner.startswith(prefix)

        gone = error(errno.ENOTCONN, f"client {client} disconnected")
        count = sum(table.drop(doomed, gone) for table in (self.posix, self.inode, self.entry))
        if count:
            log.info("%s: dropped %d locks and waiters of client %s", self.name, count, client)
        await super().client_disconnect(client)


def _without_one(held: list[EntryLock], request: EntryLock) -> list[EntryLock]:
    """Held entry locks minus one matching `request`; unlocking what is not held is a no-op."""
    for i, lock in enumerate(held):
        if lock == request:
            return held[:i] + held[i + 1 :]
    return held
