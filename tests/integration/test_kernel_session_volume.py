"""Cluster-wide locks: two `glusterpy mount -o binding=kernel` clients of one real brick.

Each mount is its own client process with its own connection to the brick, so a conflict can
only be seen by the brick's features/locks: that is what these tests prove, together with the
kernel session's part (FLUSH, RELEASE, INTERRUPT) and the brick dropping a dead client's locks.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from kernel_session_support import LockClient, connection_number, mounted, wait_until

from glusterpy.fuse.kernel.mount import connection_device
from tests.support import bricks
from tests.support.mounts import GLUSTERPY

pytestmark = pytest.mark.integration

if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
    pytest.skip("needs /dev/fuse and root", allow_module_level=True)

# How long a waiter must stay blocked for the test to call it blocked (a wrongly granted lock
# answers at once); it bounds the test, it is no claim about speed.
STILL_BLOCKED = 0.5


@pytest.fixture
def two_clients(brick_factory, mount_factory, tmp_path):
    """(holder, other, first mount, second mount): lock clients on one file via two mounts."""
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    first = mount_factory(volfile, "mnt1", "binding=kernel")
    second = mount_factory(volfile, "mnt2", "binding=kernel")
    (first.path / "f").write_bytes(b"mail spool\n")
    made: list[LockClient] = []
    try:
        made.append(LockClient(first.path / "f"))
        made.append(LockClient(second.path / "f"))
        yield made[0], made[1], first, second
    finally:
        for client in made:
            client.kill()


def _blocked(waiter: LockClient) -> bool:
    return waiter.answer(STILL_BLOCKED) is None


def test_fcntl_lock_of_one_client_blocks_the_other_until_released(two_clients):
    holder, other, _, _ = two_clients
    assert holder.do("lock w 0 0 0") == "ok"
    assert other.do("lock w 0 0 0") == "err EAGAIN"
    kind, start, length, _ = other.do("getlk 0 0").split()
    assert (kind, start, length) == ("w", "0", "0")
    other.start("lock w 1 0 0")
    assert _blocked(other)
    assert holder.do("lock u 0 0 0") == "ok"
    assert other.answer(10) == "ok"
    assert holder.do("lock w 0 0 0") == "err EAGAIN"


@pytest.mark.parametrize("release", ["close", "kill"])
def test_fcntl_lock_is_granted_when_the_holder_closes_or_dies(two_clients, release):
    holder, other, _, _ = two_clients
    assert holder.do("lock w 0 0 0") == "ok"
    other.start("lock w 1 0 0")
    assert _blocked(other)
    if release == "close":
        assert holder.do("close") == "ok"
    else:
        holder.kill()
    assert other.answer(10) == "ok"


@pytest.mark.parametrize("release", ["unlock", "close", "kill"])
def test_flock_of_one_client_blocks_the_other_until_released(two_clients, release):
    holder, other, _, _ = two_clients
    assert holder.do("flock w 0") == "ok"
    assert other.do("flock w 0") == "err EAGAIN"
    other.start("flock w 1")
    assert _blocked(other)
    holder.let_go(release, "flock u 0")
    assert other.answer(10) == "ok"


def test_ofd_lock_is_released_on_close(two_clients):
    holder, other, _, _ = two_clients
    assert holder.do("ofd w 0 0") == "ok"
    assert other.do("ofd w 0 0") == "err EAGAIN"
    assert holder.do("close") == "ok"
    # The kernel sends RELEASE in the background after close(2) has returned.
    wait_until(lambda: other.do("ofd w 0 0") == "ok", 10, "the OFD lock to be released")


def test_blocked_lock_interrupted_by_a_signal_returns_eintr(two_clients):
    holder, other, _, second = two_clients
    assert holder.do("lock w 0 0 0") == "ok"
    assert other.do("alarm 0.3") == "ok"
    other.start("lock w 1 0 0")
    assert other.answer(10) == "interrupted"
    # The mount still answers and the interrupted wait was withdrawn from the brick: once the
    # holder unlocks, nobody holds the lock.
    assert (second.path / "f").read_bytes() == b"mail spool\n"
    assert holder.do("lock u 0 0 0") == "ok"
    assert holder.do("lock w 0 0 0") == "ok"


def test_locks_of_a_dead_client_are_dropped_by_the_brick(two_clients):
    holder, other, first, _ = two_clients
    assert holder.do("lock w 0 0 0") == "ok"
    other.start("lock w 1 0 0")
    assert _blocked(other)
    # The whole first client goes: its mount process dies, its brick connection with it.
    os.kill(first.pid, signal.SIGKILL)
    assert other.answer(20) == "ok"


@pytest.mark.parametrize("kind", ["lockf", "flock"])
def test_ten_thousand_lock_unlock_pairs_leave_no_lock_on_the_brick(two_clients, kind):
    holder, other, _, _ = two_clients
    assert holder.do(f"loop 10000 {kind}", timeout=180) == "ok"
    # The other client, on its own connection, gets at once what any leftover would block.
    assert other.do("lock w 0 0 0" if kind == "lockf" else "flock w 0") == "ok"


@pytest.fixture
def fusectl():
    """/sys/fs/fuse/connections, mounted for the test when it is not already."""
    connections = Path("/sys/fs/fuse/connections")
    ours = not mounted(connections)
    if ours:
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(connections)], check=True)
    yield connections
    if ours:
        subprocess.run(["umount", "-l", str(connections)], timeout=10)


def test_mount_options_set_the_background_queue_and_read_ahead(
    brick_factory, mount_factory, tmp_path, fusectl
):
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    options = "binding=kernel,background-qlen=32,congestion-threshold=16,read-ahead-kb=512"
    mount = mount_factory(volfile, "mnt", options)
    os.stat(mount.path)  # INIT is answered by now
    connection = fusectl / str(connection_number(mount.path))
    assert (connection / "max_background").read_text().strip() == "32"
    assert (connection / "congestion_threshold").read_text().strip() == "16"
    device = connection_device(str(mount.path))
    assert Path(f"/sys/class/bdi/{device}/read_ahead_kb").read_text().strip() == "512"


def test_a_bad_binding_option_is_one_line_naming_it(brick_factory, tmp_path):
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    (tmp_path / "mnt").mkdir()
    command = [GLUSTERPY, "mount", "-f", str(volfile), str(tmp_path / "mnt"), "--foreground"]
    command += ["-o", "binding=kernel,background-qlen=lots"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "mnt")], capture_output=True, timeout=10)
    assert proc.returncode == 2
    # In the foreground the log goes to stderr too; the error is its last line, no traceback.
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "glusterpy: error: mount option background-qlen=lots: not a whole number"
