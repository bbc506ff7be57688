"""Transactions of cluster/replicate: lock, pre-op, fop on all children, post-op, unlock.

The guarantee kept: when a modifying fop returns success, every child that took part has
applied it, and every child that missed it (down, failed, or not reached) is accused by the
children that applied it. The pre-op marks the transaction in flight on each child
(`trusted.afr.dirty` +1); the post-op takes that mark back and, on each child that applied the
fop, adds +1 to the pending counter of each child that did not. A child that dies between the
two keeps its dirty mark, which makes it a "fool" whose own accusations do not count. In the
common case (all children applied it) pre-op and post-op each change one xattr per child.

Locks are taken first non-blocking on all children at once; on any conflict the taken locks are
dropped and blocking locks are taken one child at a time in child order, so two transactions
never wait for each other crosswise (the order is the same for every client).

Round trips, per child and all children in parallel: the trylocks and the pre-op travel in one
compound, the fop in the next request, the post-op and the unlocks in a third compound. Writes
through one handle can share one transaction (`_afr_eager`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from glusterpy.xlator import Call, Flock, Translator, error
from glusterpy.xlators.cluster import _afr_changelog as changelog

if TYPE_CHECKING:
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)

# What features/locks answers when a non-blocking lock conflicts with another owner's.
_CONFLICT = {errno.EAGAIN, errno.EACCES, errno.EBUSY}
# Lock ranges of the metadata domain cover the whole inode: metadata has no byte range.
WHOLE = (0, 0)

ChildCall = Callable[[int, Translator], Awaitable[Any]]


async def fan_out(afr: Replicate, children: Iterable[int], call: ChildCall) -> dict[int, Any]:
    """Run `call(i, child_i)` on the given children in parallel.

    Answers a dict child index -> result, or the OSError that child raised. A child answering
    ENOTCONN is marked down.
    """
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        try:
            results[i] = await call(i, afr.children[i])
        except OSError as exc:
            results[i] = exc
            afr.child_failed(i, exc)

    async with trio.open_nursery() as nursery:
        for i in children:
            nursery.start_soon(one, i)
    return results


def successes(results: dict[int, Any]) -> list[int]:
    return sorted(i for i, r in results.items() if not isinstance(r, OSError))


def first_error(results: dict[int, Any]) -> OSError:
    """The error to report when no child succeeded: a real answer beats 'not connected'."""
    errors = [r for _, r in sorted(results.items()) if isinstance(r, OSError)]
    for exc in errors:
        if exc.errno != errno.ENOTCONN:
            return exc
    return errors[0] if errors else error(errno.ENOTCONN, "no subvolume is up")


def first_success(results: dict[int, Any]) -> Any:
    """The answer of the lowest-numbered child that succeeded, or the error to raise."""
    good = successes(results)
    if not good:
        raise first_error(results)
    return results[good[0]]


async def _each(items: Sequence[Any], call: Callable[[Any], Awaitable[Any]]) -> None:
    """Run `call` on every item at once; the first OSError is raised after all finished."""
    errors: list[OSError] = []

    async def one(item: Any) -> None:
        try:
            await call(item)
        except OSError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
    if errors:
        raise errors[0]


def _succeeded(results: list[Any]) -> int:
    """How many calls of a compound succeeded: all it answered but a failure at the end."""
    return len(results) - (1 if results and isinstance(results[-1], OSError) else 0)


async def _run(child: Translator, call: Call) -> Any:
    fop, args = call
    return await getattr(child, fop)(*args)


class _LockBase:
    """A lock as fop calls: `take_call` and `drop_call` build them, `take` and `drop` run them."""

    def take_call(self, owner: bytes, blocking: bool) -> Call:
        raise NotImplementedError

    def drop_call(self, owner: bytes) -> Call:
        raise NotImplementedError

    async def take(self, child: Translator, owner: bytes, blocking: bool) -> None:
        await _run(child, self.take_call(owner, blocking))

    async def drop(self, child: Translator, owner: bytes) -> None:
        await _run(child, self.drop_call(owner))


@dataclass(frozen=True, slots=True)
class InodeLock(_LockBase):
    domain: str
    gfid: bytes
    start: int
    length: int

    def take_call(self, owner: bytes, blocking: bool) -> Call:
        cmd = fcntl.F_SETLKW if blocking else fcntl.F_SETLK
        lock = Flock(fcntl.F_WRLCK, self.start, self.length, 0, owner)
        return "inodelk", (self.domain, self.gfid, cmd, lock)

    def drop_call(self, owner: bytes) -> Call:
        lock = Flock(fcntl.F_UNLCK, self.start, self.length, 0, owner)
        return "inodelk", (self.domain, self.gfid, fcntl.F_SETLK, lock)


@dataclass(frozen=True, slots=True)
class EntryLock(_LockBase):
    domain: str
    parent: bytes
    name: bytes | None

    def take_call(self, owner: bytes, blocking: bool) -> Call:
        op = "lock" if blocking else "trylock"
        return "entrylk", (self.domain, self.parent, self.name, op, owner)

    def drop_call(self, owner: bytes) -> Call:
        return "entrylk", (self.domain, self.parent, self.name, "unlock", owner)


Lock = InodeLock | EntryLock


class LockSet:
    """Locks of one owner on several children; `held[i]` lists the locks held on child i."""

    def __init__(self, afr: Replicate, locks: Sequence[Lock]):
        self.afr = afr
        self.locks = list(locks)
        self.owner = os.urandom(8)
        self.held: dict[int, list[Lock]] = {}

    async def acquire(self, candidates: Sequence[int]) -> list[int]:
        """Lock on as many of `candidates` as answer; returns the children locked."""
        conflict, _ = await self.try_all(candidates)
        if conflict:
            await self.release()
            await self.block_in_order(candidates)
        return sorted(self.held)

    async def try_all(
        self, candidates: Sequence[int], then: Sequence[Call] = ()
    ) -> tuple[bool, dict[int, list[Any]]]:
        """Try every lock on every child at once (non-blocking, so order does not matter).

        One compound per child: the trylocks, then the calls `then`, which run only where all
        locks were taken. Answers whether any lock conflicted with another owner's, and per
        child the results of `then` that ran (the last an OSError if one failed). A child where
        only some locks were taken keeps none of them.
        """
        await self.afr.eager.yield_to(self)
        conflict = False
        after: dict[int, list[Any]] = {}
        count = len(self.locks)
        takes = [lock.take_call(self.owner, False) for lock in self.locks]

        async def one(i: int, child: Translator) -> None:
            nonlocal conflict
            got = await child.compound([*takes, *then])
            taken = self.locks[: _succeeded(got)]
            if taken:
                self.held[i] = taken
            if len(taken) < count:
                exc = got[len(taken)]
                conflict = conflict or exc.errno in _CONFLICT
                raise exc
            after[i] = got[count:]

        await fan_out(self.afr, candidates, one)
        if not conflict:
            partial = {i: locks for i, locks in self.held.items() if len(locks) < count}
            for i in partial:
                del self.held[i]
            await self._drop(partial)
        return conflict, after

    def drop_calls(self, i: int) -> list[Call]:
        """The unlocks of what child i holds, newest first."""
        return [lock.drop_call(self.owner) for lock in reversed(self.held.get(i, ()))]

    async def block_in_order(self, candidates: Sequence[int]) -> None:
        for i in sorted(candidates):
            try:
                await self._take_on(i, self.afr.children[i], blocking=True)
            except OSError as exc:
                self.afr.child_failed(i, exc)
                if exc.errno != errno.ENOTCONN:
                    raise

    async def _take_on(self, i: int, child: Translator, blocking: bool) -> None:
        taken: list[Lock] = []
        try:
            for lock in self.locks:
                await lock.take(child, self.owner, blocking)
                taken.append(lock)
        except BaseException:
            if taken:
                self.held[i] = taken
            raise
        self.held[i] = taken

    async def release(self) -> None:
        held, self.held = self.held, {}
        await self._drop(held)

    async def _drop(self, held: dict[int, list[Lock]]) -> None:
        async def drop(i: int, child: Translator) -> None:
            for lock in reversed(held[i]):
                await lock.drop(child, self.owner)

        with trio.CancelScope(shield=True):
            results = await fan_out(self.afr, held, drop)
        for i, r in results.items():
            if isinstance(r, OSError) and r.errno != errno.ENOTCONN:
                log.warning(
                    "%s: unlock on %s failed: %s", self.afr.name, self.afr.children[i].name, r
                )


class Transaction:
    """One modifying fop of kind data, metadata or entry, on the objects in `targets`.

    `targets` are the gfids whose counters mark the change (the object itself for data and
    metadata, the parent directories for entry fops).
    """

    def __init__(self, afr: Replicate, kind: int, targets: Sequence[bytes], locks: Sequence[Lock]):
        self.afr = afr
        self.kind = kind
        self.targets = list(dict.fromkeys(targets))
        self.locks = LockSet(afr, locks)
        self.marked: dict[int, list[bytes]] = {}

    async def run(self, call: ChildCall, children: Iterable[int] | None = None) -> dict[int, Any]:
        """Run `call` on the children under the transaction; answers the per-child results."""
        self.afr.check_quorum()
        candidates = self.afr.up_children() if children is None else list(children)
        candidates = [i for i in candidates if self.afr.is_up(i)]
        if not candidates:
            raise error(errno.ENOTCONN, f"{self.afr.name}: no subvolume is up")
        try:
            ready = await self.lock_and_mark(candidates)
            results = await fan_out(self.afr, ready, call)
            await self.post_op_and_unlock(successes(results))
        except BaseException:
            await self.locks.release()
            raise
        self.afr.note_outcome(self.kind, self.targets, successes(results))
        return results

    async def lock_and_mark(self, candidates: list[int]) -> list[int]:
        """Lock and pre-op the children; answers those ready for the fop.

        The common case is one compound per child (the trylocks and the pre-op). When a lock
        conflicts, whatever was taken and marked is given back and the locks are taken again
        blocking, in child order, with the pre-op after them.
        """
        pre_op = self._pre_op_calls()
        conflict, after = await self.locks.try_all(candidates, pre_op)
        ready = []
        for i, got in after.items():
            marked = self.targets[: _succeeded(got)]
            if marked:
                self.marked[i] = marked
            if len(marked) == len(pre_op):
                ready.append(i)
        if conflict:
            await self.post_op_and_unlock(None)
            await self.locks.block_in_order(candidates)
            ready = await self._pre_op(sorted(self.locks.held))
        if not self.locks.held:
            raise error(errno.ENOTCONN, f"{self.afr.name}: no subvolume could be locked")
        return sorted(ready)

    def _pre_op_calls(self) -> list[Call]:
        if not self._changelog_on():
            return []
        operand = {changelog.DIRTY_KEY: changelog.delta(self.kind, 1)}
        return [("xattrop", (gfid, "add-array", operand)) for gfid in self.targets]

    def _changelog_on(self) -> bool:
        return self.afr.change_log[self.kind]

    async def _pre_op(self, locked: list[int]) -> list[int]:
        """Mark the transaction in flight (dirty +1) on every locked child, one by one."""
        pre_op = self._pre_op_calls()
        if not pre_op:
            return locked

        async def mark(i: int, child: Translator) -> None:
            async def one(call: Call) -> None:
                await _run(child, call)
                self.marked.setdefault(i, []).append(call[1][0])

            await _each(pre_op, one)

        results = await fan_out(self.afr, locked, mark)
        return [i for i in locked if not isinstance(results[i], OSError)]

    def _post_op_operand(self, i: int, succeeded: set[int]) -> dict[str, bytes]:
        """Dirty -1; on a child that applied the fop, +1 against each child that did not."""
        operand = {changelog.DIRTY_KEY: changelog.delta(self.kind, -1)}
        if i in succeeded:
            for j, key in enumerate(self.afr.keys):
                if j not in succeeded:
                    operand[key] = changelog.delta(self.kind, 1)
        return operand

    async def post_op_and_unlock(self, succeeded: list[int] | None) -> None:
        """Post-op and unlock, one compound per child; `succeeded` None: no fop was applied.

        The post-op takes back the dirty marks and, where the fop was applied, accuses the
        children that missed it. When no child applied it nothing diverged, so nobody is
        accused. A child whose post-op failed still has its locks dropped.
        """
        applied = set(succeeded or ())
        marked, self.marked = self.marked, {}
        involved = sorted(set(marked) | set(self.locks.held))

        async def finish(i: int, child: Translator) -> None:
            operand = self._post_op_operand(i, applied)
            post_op = [("xattrop", (gfid, "add-array", operand)) for gfid in marked.get(i, ())]
            unlocks = self.locks.drop_calls(i)
            if not post_op and not unlocks:
                return
            got = await child.compound([*post_op, *unlocks])
            if isinstance(got[-1], OSError):
                # The compound stopped there: drop the locks whose unlock did not run.
                await _each(unlocks[max(len(got) - len(post_op), 0) :], lambda c: _run(child, c))
                raise got[-1]

        with trio.CancelScope(shield=True):
            results = await fan_out(self.afr, involved, finish)
        self.locks.held = {}
        for i, r in results.items():
            if isinstance(r, OSError) and r.errno != errno.ENOTCONN:
                log.warning(
                    "%s: post-op or unlock on %s failed: %s",
                    self.afr.name,
                    self.afr.children[i].name,
                    r,
                )
