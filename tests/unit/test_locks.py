"""Unit tests of features/locks over a recording stand-in child.

They check conflicts, range splitting and merging, F_GETLK answers, blocking grants in FIFO
order, cancellation leaving no state, flush/release dropping locks, inodelk and entrylk
domains, and that a client's disconnect drops its locks and fails its waiters.
"""

from __future__ import annotations

import errno
import logging
from fcntl import F_GETLK, F_RDLCK, F_SETLK, F_SETLKW, F_UNLCK, F_WRLCK

import pytest
import trio
import trio.testing

from glusterpy.volfile import registry
from glusterpy.xlator import Flock, Iatt, Translator
from glusterpy.xlators.features.locks import END, Locks

GFID = bytes(range(16))
DIR = bytes(range(1, 17))


class Child(Translator):
    """Stands in for storage/posix: hands out handles and records what reaches it."""

    def __init__(self):
        super().__init__("child", [], {})
        self.calls: list[tuple] = []
        self._next_fh = 100

    async def open(self, gfid, flags):
        self._next_fh += 1
        return self._next_fh

    async def create(self, parent, name, flags, mode, uid, gid, gfid):
        self._next_fh += 1
        return self._next_fh, Iatt(gfid, 0o100644, 1, 0, 0, 0, 0, 0, 4096, 0, 0, 0)

    async def flush(self, fh, lk_owner):
        self.calls.append(("flush", fh, lk_owner))

    async def release(self, fh):
        self.calls.append(("release", fh))

    async def stat(self, gfid):
        return ("stat", gfid)

    async def client_disconnect(self, client):
        self.calls.append(("disconnect", client))


def make(**options):
    child = Child()
    opts = {"mandatory-locks": False, "trace": False}
    opts.update(options)
    return Locks("locks", [child], opts), child


def run(body, **options):
    locks, child = make(**options)

    async def main():
        with trio.fail_after(10):
            await body(locks, child)

    trio.run(main)
    return locks


def lock(type_, start, length, owner, flock=False):
    return Flock(type_, start, length, 1, owner, flock)


async def expect_errno(err, awaitable):
    with pytest.raises(OSError) as info:
        await awaitable
    assert info.value.errno == err


def spans(locks, gfid=GFID):
    return sorted((h.type, h.start, h.end, h.owner) for h in locks.posix.held(gfid))


# --- lk ---------------------------------------------------------------------------------------


def test_getlk_and_setlk_conflicts():
    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        answer = await locks.lk(fh, F_GETLK, lock(F_WRLCK, 0, 10, b"c:a"))
        assert answer.type == F_UNLCK
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 10, b"c:a"))
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 5, 10, b"c:a"))
        found = await locks.lk(fh, F_GETLK, lock(F_RDLCK, 12, 1, b"c:b"))
        assert (found.type, found.start, found.length, found.owner) == (F_WRLCK, 0, 15, b"c:a")
        await expect_errno(errno.EAGAIN, locks.lk(fh, F_SETLK, lock(F_RDLCK, 14, 5, b"c:b")))
        await locks.lk(fh, F_SETLK, lock(F_RDLCK, 15, 5, b"c:b"))
        await locks.lk(fh, F_SETLK, lock(F_RDLCK, 15, 0, b"c:c"))
        await expect_errno(errno.EAGAIN, locks.lk(fh, F_SETLK, lock(F_WRLCK, 10**12, 1, b"c:b")))
        await expect_errno(errno.EBADF, locks.lk(999, F_SETLK, lock(F_WRLCK, 0, 1, b"c:a")))
        await expect_errno(errno.EINVAL, locks.lk(fh, 99, lock(F_WRLCK, 0, 1, b"c:a")))
        await expect_errno(errno.EINVAL, locks.lk(fh, F_SETLK, lock(F_WRLCK, -1, 1, b"c:a")))

    run(body)


def test_unlock_splits_and_same_owner_locks_merge_or_replace():
    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 100, b"c:a"))
        await locks.lk(fh, F_SETLK, lock(F_UNLCK, 40, 20, b"c:a"))
        assert spans(locks) == [(F_WRLCK, 0, 40, b"c:a"), (F_WRLCK, 60, 100, b"c:a")]
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 45, 10, b"c:b"))
        await expect_errno(errno.EAGAIN, locks.lk(fh, F_SETLK, lock(F_WRLCK, 30, 20, b"c:b")))
        await locks.lk(fh, F_SETLK, lock(F_UNLCK, 0, 0, b"c:b"))
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 40, 20, b"c:a"))
        assert spans(locks) == [(F_WRLCK, 0, 100, b"c:a")]
        await locks.lk(fh, F_SETLK, lock(F_RDLCK, 20, 10, b"c:a"))
        assert spans(locks) == [
            (F_RDLCK, 20, 30, b"c:a"),
            (F_WRLCK, 0, 20, b"c:a"),
            (F_WRLCK, 30, 100, b"c:a"),
        ]
        await locks.lk(fh, F_SETLK, lock(F_UNLCK, 0, 0, b"c:a"))
        assert spans(locks) == [] and locks.posix.is_empty()

    run(body)


def test_blocked_locks_are_granted_in_fifo_order_where_they_fit():
    order = []

    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 100, b"c:a"))

        async def wait_for(owner, start, length):
            await locks.lk(fh, F_SETLKW, lock(F_WRLCK, start, length, owner))
            order.append(owner)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for, b"c:b", 0, 10)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait_for, b"c:c", 0, 10)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait_for, b"c:d", 50, 10)
            await trio.testing.wait_all_tasks_blocked()
            assert locks.posix.waiting(GFID) == 3
            await locks.lk(fh, F_SETLK, lock(F_UNLCK, 50, 10, b"c:a"))
            await trio.testing.wait_all_tasks_blocked()
            assert order == [b"c:d"]
            await locks.lk(fh, F_SETLK, lock(F_UNLCK, 0, 0, b"c:a"))
            await trio.testing.wait_all_tasks_blocked()
            assert order == [b"c:d", b"c:b"]
            await locks.lk(fh, F_SETLK, lock(F_UNLCK, 0, 0, b"c:b"))
        assert order == [b"c:d", b"c:b", b"c:c"]

    run(body)


def test_a_cancelled_waiter_leaves_nothing_behind():
    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 0, b"c:a"))
        await locks.inodelk("d", GFID, F_SETLK, lock(F_WRLCK, 0, 0, b"c:a"))
        await locks.entrylk("d", DIR, b"n", "lock", b"c:a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(locks.lk, fh, F_SETLKW, lock(F_WRLCK, 0, 1, b"c:b"))
            nursery.start_soon(locks.inodelk, "d", GFID, F_SETLKW, lock(F_RDLCK, 0, 1, b"c:b"))
            nursery.start_soon(locks.entrylk, "d", DIR, None, "lock", b"c:b")
            await trio.testing.wait_all_tasks_blocked()
            assert locks.posix.waiting(GFID) == 1 and locks.inode.waiting(("d", GFID)) == 1
            assert locks.entry.waiting(("d", DIR)) == 1
            nursery.cancel_scope.cancel()
        assert locks.posix.waiting(GFID) == 0 and locks.inode.waiting(("d", GFID)) == 0
        assert locks.entry.waiting(("d", DIR)) == 0
        await locks.lk(fh, F_SETLK, lock(F_UNLCK, 0, 0, b"c:a"))
        await locks.inodelk("d", GFID, F_SETLK, lock(F_UNLCK, 0, 0, b"c:a"))
        await locks.entrylk("d", DIR, b"n", "unlock", b"c:a")
        assert locks.posix.is_empty() and locks.inode.is_empty() and locks.entry.is_empty()

    run(body)


def test_flush_drops_the_owners_posix_locks_and_release_drops_flock_locks():
    async def body(locks, child):
        fh1 = await locks.open(GFID, 2)
        fh2, _ = await locks.create(DIR, b"f", 2, 0o644, 0, 0, GFID)
        await locks.lk(fh1, F_SETLK, lock(F_WRLCK, 0, 10, b"c:a"))
        await locks.lk(fh1, F_SETLK, lock(F_WRLCK, 20, 10, b"c:b"))
        await locks.lk(fh1, F_SETLK, lock(F_WRLCK, 0, 0, b"c:a", flock=True))
        # flock and POSIX locks never conflict with each other; flock locks do among themselves.
        await expect_errno(
            errno.EAGAIN, locks.lk(fh2, F_SETLK, lock(F_RDLCK, 0, 0, b"c:z", flock=True))
        )
        await locks.flush(fh1, b"c:a")
        assert [h.owner for h in locks.posix.held(GFID) if not h.flock] == [b"c:b"]
        assert any(h.flock for h in locks.posix.held(GFID))
        await locks.release(fh1)
        assert not any(h.flock for h in locks.posix.held(GFID))
        await locks.lk(fh2, F_SETLK, lock(F_RDLCK, 0, 0, b"c:z", flock=True))
        await locks.lk(fh2, F_SETLK, lock(F_WRLCK, 0, 0, b"c:z", flock=True))
        assert child.calls == [("flush", fh1, b"c:a"), ("release", fh1)]
        await expect_errno(errno.EBADF, locks.lk(fh1, F_SETLK, lock(F_WRLCK, 0, 1, b"c:a")))

    run(body)


def test_flush_wakes_a_waiter():
    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 0, b"c:a"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(locks.lk, fh, F_SETLKW, lock(F_WRLCK, 0, 0, b"c:b"))
            await trio.testing.wait_all_tasks_blocked()
            await locks.flush(fh, b"c:a")
        assert spans(locks) == [(F_WRLCK, 0, END, b"c:b")]

    run(body)


# --- inodelk and entrylk ----------------------------------------------------------------------


def test_inodelk_domains_are_separate_and_setlkw_blocks():
    async def body(locks, child):
        await locks.inodelk("data", GFID, F_SETLK, lock(F_WRLCK, 0, 0, b"c:a"))
        await locks.inodelk("meta", GFID, F_SETLK, lock(F_WRLCK, 0, 0, b"c:b"))
        await expect_errno(
            errno.EAGAIN, locks.inodelk("data", GFID, F_SETLK, lock(F_RDLCK, 5, 1, b"c:b"))
        )
        granted = []

        async def waiter():
            await locks.inodelk("data", GFID, F_SETLKW, lock(F_WRLCK, 5, 1, b"c:b"))
            granted.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert granted == []
            await locks.inodelk("data", GFID, F_SETLK, lock(F_UNLCK, 0, 0, b"c:a"))
        assert granted == [True]
        assert locks.posix.is_empty()

    run(body)


def test_entrylk_names_and_whole_directory():
    async def body(locks, child):
        await locks.entrylk("d", DIR, b"a", "lock", b"c:1")
        await locks.entrylk("d", DIR, b"b", "trylock", b"c:2")
        await locks.entrylk("other", DIR, b"a", "trylock", b"c:2")
        await expect_errno(errno.EAGAIN, locks.entrylk("d", DIR, b"a", "trylock", b"c:2"))
        await expect_errno(errno.EAGAIN, locks.entrylk("d", DIR, None, "trylock", b"c:3"))
        await expect_errno(errno.EINVAL, locks.entrylk("d", DIR, b"a", "grab", b"c:3"))
        granted = []

        async def whole_dir():
            await locks.entrylk("d", DIR, None, "lock", b"c:3")
            granted.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(whole_dir)
            await trio.testing.wait_all_tasks_blocked()
            await locks.entrylk("d", DIR, b"a", "unlock", b"c:1")
            await trio.testing.wait_all_tasks_blocked()
            assert granted == []
            await locks.entrylk("d", DIR, b"b", "unlock", b"c:2")
        assert granted == [True]
        await expect_errno(errno.EAGAIN, locks.entrylk("d", DIR, b"z", "trylock", b"c:1"))
        await locks.entrylk("d", DIR, b"z", "unlock", b"c:1")
        await locks.entrylk("d", DIR, None, "unlock", b"c:3")
        await locks.entrylk("d", DIR, b"z", "trylock", b"c:1")

    run(body)


# --- disconnects, options, pass-through -------------------------------------------------------


def test_client_disconnect_drops_its_locks_and_fails_its_waiters():
    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 0, b"c1:a"))
        await locks.inodelk("d", GFID, F_SETLK, lock(F_WRLCK, 0, 0, b"c1:a"))
        await locks.entrylk("d", DIR, b"n", "lock", b"c1:a")
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 0, b"c1x:a", flock=True))
        results = {}

        async def wait(key, call):
            try:
                await call
                results[key] = "granted"
            except OSError as e:
                results[key] = e.errno

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "c2-lk", locks.lk(fh, F_SETLKW, lock(F_RDLCK, 0, 1, b"c2:b")))
            nursery.start_soon(
                wait, "c2-ino", locks.inodelk("d", GFID, F_SETLKW, lock(F_RDLCK, 0, 1, b"c2:b"))
            )
            nursery.start_soon(wait, "c1-ent", locks.entrylk("d", DIR, b"n", "lock", b"c1:other"))
            nursery.start_soon(wait, "c2-ent", locks.entrylk("d", DIR, None, "lock", b"c2:b"))
            await trio.testing.wait_all_tasks_blocked()
            assert results == {}
            await locks.client_disconnect("c1")
        assert results == {
            "c2-lk": "granted",
            "c2-ino": "granted",
            "c1-ent": errno.ENOTCONN,
            "c2-ent": "granted",
        }
        assert [h.owner for h in locks.posix.held(GFID)] == [b"c1x:a", b"c2:b"]
        assert child.calls == [("disconnect", "c1")]

    run(body)


def test_other_fops_pass_down_and_options_are_registered():
    async def body(locks, child):
        assert await locks.stat(GFID) == ("stat", GFID)

    run(body)
    kind = registry.get("features/posix-locks")
    assert kind.factory is Locks
    assert kind.find_option("mandatory") is kind.find_option("mandatory-locks")
    assert kind.find_option("trace") is not None


def test_trace_logs_lock_requests_at_info(caplog):
    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 1, b"c:a"))

    with caplog.at_level(logging.INFO, logger="glusterpy.xlators.features.locks"):
        run(body, trace=True)
        assert any("granted" in r.getMessage() for r in caplog.records)
        caplog.clear()
        run(body)
        assert caplog.records == []


def test_a_blocking_lock_that_would_deadlock_fails_with_edeadlk():
    async def body(locks, child):
        fh = await locks.open(GFID, 2)
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 0, 1, b"c:a"))
        await locks.lk(fh, F_SETLK, lock(F_WRLCK, 1, 1, b"c:b"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(locks.lk, fh, F_SETLKW, lock(F_WRLCK, 1, 1, b"c:a"))
            await trio.testing.wait_all_tasks_blocked()
            await expect_errno(errno.EDEADLK, locks.lk(fh, F_SETLKW, lock(F_WRLCK, 0, 1, b"c:b")))
            assert locks.posix.waiting(GFID) == 1
            await locks.lk(fh, F_SETLK, lock(F_UNLCK, 0, 0, b"c:b"))
        assert spans(locks) == [(F_WRLCK, 0, 2, b"c:a")]

    run(body)
