"""Locks through the kernel session: two mounts of one file system, a client process on each.

The two mounts are two FUSE connections served by one in-memory file system, so the kernel
cannot settle a conflict itself: every lock goes through the session to the file system, as it
goes to the bricks on a real volume. Blocking waits are checked with bounded reads.
"""

from __future__ import annotations

import errno
import os
import signal

import pytest
from kernel_session_support import LockClient, Servers, wait_until

pytestmark = pytest.mark.integration

if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
    pytest.skip("needs /dev/fuse and root", allow_module_level=True)

# How long a waiter must stay blocked for the test to call it blocked. Not a timing claim about
# the file system: a wrongly granted lock answers at once, so this only bounds the test.
STILL_BLOCKED = 0.5


@pytest.fixture
def clients(tmp_path):
    """Two lock clients on the same file through two mounts; the first has the file open."""
    with Servers(tmp_path) as serve:
        first_mount, second_mount = serve(2)
        made: list[LockClient] = []
        try:
            made.append(LockClient(first_mount / "f"))
            made.append(LockClient(second_mount / "f"))
            yield made[0], made[1], first_mount
        finally:
            for client in made:
                client.kill()


def _locks_held(mount) -> int:
    return int(os.getxattr(mount, "user.test.locks"))


def _blocked(waiter: LockClient) -> bool:
    return waiter.answer(STILL_BLOCKED) is None


def test_exclusive_fcntl_lock_conflicts_across_mounts_and_getlk_names_the_holder(clients):
    holder, other, _ = clients
    assert holder.do("lock w 0 0 0") == "ok"
    assert other.do("lock w 0 0 0") == "err EAGAIN"
    assert other.do("lock r 0 10 10") == "err EAGAIN"
    assert other.do("getlk 0 0") == f"w 0 0 {holder.pid}"


def test_byte_ranges_conflict_only_where_they_overlap(clients):
    holder, other, mount = clients
    assert holder.do("lock w 0 0 100") == "ok"
    assert other.do("lock w 0 100 100") == "ok"
    assert other.do("lock w 0 50 100") == "err EAGAIN"
    # F_GETLK with no conflict changes only the type: its own lock never conflicts.
    assert other.do("getlk 150 10") == "u 150 10 0"
    assert _locks_held(mount) == 2


@pytest.mark.parametrize("release", ["unlock", "close", "kill"])
def test_blocked_fcntl_lock_is_granted_when_the_holder_lets_go(clients, release):
    holder, other, mount = clients
    assert holder.do("lock w 0 0 0") == "ok"
    other.start("lock w 1 0 0")
    assert _blocked(other)
    holder.let_go(release, "lock u 0 0 0")
    assert other.answer(10) == "ok"
    assert _locks_held(mount) == 1


@pytest.mark.parametrize("release", ["unlock", "close", "kill"])
def test_flock_conflicts_across_mounts_until_released(clients, release):
    holder, other, mount = clients
    assert holder.do("flock w 0") == "ok"
    assert other.do("flock w 0") == "err EAGAIN"
    assert other.do("flock r 0") == "err EAGAIN"
    other.start("flock w 1")
    assert _blocked(other)
    holder.let_go(release, "flock u 0")
    assert other.answer(10) == "ok"
    assert _locks_held(mount) == 1


def test_flock_and_fcntl_locks_do_not_conflict(clients):
    holder, other, _ = clients
    assert holder.do("flock w 0") == "ok"
    assert other.do("lock w 0 0 0") == "ok"


def test_ofd_lock_is_dropped_when_its_file_is_closed(clients):
    holder, other, mount = clients
    assert holder.do("ofd w 0 0") == "ok"
    assert other.do("ofd w 0 0") == "err EAGAIN"
    assert holder.do("close") == "ok"
    # The kernel sends RELEASE in the background after close(2) has returned.
    wait_until(lambda: other.do("ofd w 0 0") == "ok", 10, "the OFD lock to be released")
    assert _locks_held(mount) == 1


def test_blocked_lock_wait_interrupted_by_a_signal_returns_eintr(clients):
    holder, other, mount = clients
    assert holder.do("lock w 0 0 0") == "ok"
    assert other.do("alarm 0.3") == "ok"
    other.start("lock w 1 0 0")
    assert other.answer(10) == "interrupted"
    # The mount still answers, the interrupted wait left no lock, and the holder's lock stands.
    assert other.do("getlk 0 0") == f"w 0 0 {holder.pid}"
    assert _locks_held(mount) == 1
    assert holder.do("lock u 0 0 0") == "ok"
    assert other.do("lock w 0 0 0") == "ok"


def test_sigkill_of_a_blocked_waiter_leaves_no_lock(clients):
    holder, other, mount = clients
    assert holder.do("lock w 0 0 0") == "ok"
    other.start("lock w 1 0 0")
    assert _blocked(other)
    os.kill(other.pid, signal.SIGKILL)
    other.kill()
    assert holder.do("lock u 0 0 0") == "ok"
    assert _locks_held(mount) == 0


@pytest.mark.parametrize("kind", ["lockf", "flock"])
def test_ten_thousand_lock_unlock_pairs_leave_no_lock_behind(clients, kind):
    holder, other, mount = clients
    assert holder.do(f"loop 10000 {kind}", timeout=120) == "ok"
    assert _locks_held(mount) == 0
    assert other.do("lock w 0 0 0" if kind == "lockf" else "flock w 0") == "ok"


def test_errno_names_used_by_the_client_are_the_platform_ones():
    # The lock client reports errno.errorcode names; EAGAIN must be the name flock's
    # EWOULDBLOCK shows up as, or the flock assertions above would compare the wrong thing.
    assert errno.errorcode[errno.EWOULDBLOCK] == "EAGAIN"
