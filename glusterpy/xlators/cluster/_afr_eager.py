"""Eager locking of cluster/replicate: one data transaction over many writes of one handle.

A write through a handle takes the whole-file data lock and the pre-op (dirty +1) on every
child, as any transaction does, but then keeps both: the next writes of that handle go straight
to the children, and the post-op and unlock run once, when the handle is flushed or released,
when another transaction of this client needs the file, or after `post-op-delay-secs` without a
write. A mailbox written in a few pieces costs one lock and one post-op instead of one each.

Why the promise holds (when a write returns success, every child has it or is accused):
- A handle holds eagerly only while every child of the volume is locked and marked and every
  write has succeeded on all of them. Then each child has every acknowledged write, and the
  dirty marks left by a client that dies say only that a transaction was in flight: the heal
  makes the copies equal from any of them (they hold the same acknowledged data).
- The first write that fails on some child ends the hold at once, before it returns: the
  post-op takes back the one dirty mark on each child and accuses the children that missed a
  write. No accusation is ever recorded while this client's own dirty mark on that child is
  still out, so an accuser is never a "fool" whose accusations do not count.
- With any child down, not locked or not marked, a write runs as a plain transaction (post-op
  before it returns).
- A child going down or up ends the holds (its locks died with its connection, or it came back
  without them), and so does anything else of this client that locks the file's data.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Any

import trio

from glusterpy.xlator import error
from glusterpy.xlators.cluster._afr_changelog import DATA
from glusterpy.xlators.cluster._afr_transaction import (
    WHOLE,
    ChildCall,
    InodeLock,
    LockSet,
    Transaction,
    fan_out,
    successes,
)

if TYPE_CHECKING:
    from glusterpy.xlators.cluster._afr_fd import OpenFd
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)


class EagerHold:
    """The data lock and dirty marks one handle keeps across its writes.

    `lock` orders the writes of the hold (overlapping writes must land in the same order on
    every child, and the whole-file brick lock no longer orders them) and its end.
    """

    def __init__(self, afr: Replicate, fd: OpenFd):
        self.afr = afr
        self.fd = fd
        lock = InodeLock(afr.data_domain, fd.gfid, *WHOLE)
        self.txn = Transaction(afr, DATA, [fd.gfid], [lock])
        self.lock = trio.Lock()
        self.epoch = afr.child_epoch
        self.ready: list[int] = []
        self.begun = False
        self.done = False
        self.deadline = trio.current_time() + afr.post_op_delay

    @property
    def locks(self) -> LockSet:
        return self.txn.locks

    def fits(self, fd: OpenFd) -> bool:
        """Whether the next write of `fd` may use this hold as it is."""
        return (
            not self.done
            and self.epoch == self.afr.child_epoch
            and (not self.begun or sorted(fd.handles) == self.ready)
        )

    def eager(self) -> bool:
        """Every child of the volume is locked and marked: the post-op may wait."""
        return self.ready == list(range(len(self.afr.children)))

    async def begin(self) -> None:
        """Lock and mark the children holding the handle; caller holds `lock`."""
        self.afr.check_quorum()
        candidates = [i for i in self.fd.handles if self.afr.is_up(i)]
        if not candidates:
            raise error(errno.ENOTCONN, f"{self.afr.name}: no subvolume is up")
        self.ready = await self.txn.lock_and_mark(candidates)
        self.begun = True

    async def end(self, succeeded: list[int] | None = None) -> None:
        """Post-op and unlock (`succeeded`: the children that applied every write, by default
        all that were ready); caller holds `lock`."""
        if self.done:
            return
        self.done = True
        self.afr.eager.forget(self)
        if self.begun:
            await self.txn.post_op_and_unlock(self.ready if succeeded is None else succeeded)

    async def finish(self) -> None:
        async with self.lock:
            await self.end()

    async def expire(self) -> None:
        """End the hold once `post-op-delay-secs` have passed since its last write."""
        while not self.done:
            await trio.sleep_until(self.deadline)
            if not self.done and trio.current_time() >= self.deadline:
                await self.finish()


class EagerLocks:
    """The holds of one replicate translator, by handle and by gfid."""

    def __init__(self, afr: Replicate):
        self.afr = afr
        self.by_gfid: dict[bytes, set[EagerHold]] = {}

    def forget(self, hold: EagerHold) -> None:
        holds = self.by_gfid.get(hold.fd.gfid)
        if holds is not None:
            holds.discard(hold)
            if not holds:
                del self.by_gfid[hold.fd.gfid]
        if hold.fd.eager is hold:
            hold.fd.eager = None

    async def write(self, fd: OpenFd, call: ChildCall) -> dict[int, Any]:
        """Run one write of `fd` under its hold (made when it has none that fits)."""
        while True:
            hold = fd.eager
            if hold is None or not hold.fits(fd):
                if hold is not None:
                    await hold.finish()
                hold = EagerHold(self.afr, fd)
                fd.eager = hold
                self.by_gfid.setdefault(fd.gfid, set()).add(hold)
                self.afr.in_background(hold.expire)
            async with hold.lock:
                if hold.done:
                    continue
                return await self._write_under(hold, call)

    async def _write_under(self, hold: EagerHold, call: ChildCall) -> dict[int, Any]:
        try:
            if not hold.begun:
                await hold.begin()
            results = await fan_out(self.afr, hold.ready, call)
        except BaseException:
            hold.done = True
            self.forget(hold)
            await hold.locks.release()
            raise
        good = successes(results)
        if good != hold.ready or not hold.eager():
            await hold.end(good)
        else:
            hold.deadline = trio.current_time() + self.afr.post_op_delay
        self.afr.note_outcome(DATA, [hold.fd.gfid], good)
        return results

    async def end_fd(self, fd: OpenFd) -> None:
        """Post-op and unlock what `fd` holds (before its flush or release)."""
        if fd.eager is not None:
            await fd.eager.finish()

    async def yield_to(self, locks: LockSet) -> None:
        """End this client's other holds on the data `locks` will lock, so it need not wait
        for them at the bricks. Holds still taking their locks are left to the bricks' queue."""
        for lock in locks.locks:
            if not isinstance(lock, InodeLock) or lock.domain != self.afr.data_domain:
                continue
            for hold in list(self.by_gfid.get(lock.gfid, ())):
                if hold.begun and hold.locks is not locks:
                    await hold.finish()

    async def end_all(self) -> None:
        for holds in list(self.by_gfid.values()):
            for hold in list(holds):
                await hold.finish()
