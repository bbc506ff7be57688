"""Two mounts of one brick, and a brick that dies and comes back while mounted.

Changes made through one mount must show on the other once the 1 s entry and attribute caches
expire, so the checks poll with a bounded deadline instead of sleeping. A brick killed with
SIGKILL and restarted on the same port must leave the mount usable again within a bounded wait.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import bricks
from tests.support.mounts import wait_until

pytestmark = pytest.mark.integration
ALL_BINDINGS = True

# The caches expire after 1 s; the rest is slack for a busy machine.
SEEN_WITHIN = 10.0
RECOVER_WITHIN = 30.0


@pytest.fixture
def two_mounts(brick_factory, mount_factory, tmp_path):
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    return mount_factory(volfile, "mnt-a"), mount_factory(volfile, "mnt-b")


def test_two_mounts_see_each_others_changes(two_mounts):
    a, b = two_mounts
    (a.path / "note").write_bytes(b"written on a")
    wait_until(lambda: (b.path / "note").read_bytes() == b"written on a", SEEN_WITHIN, "new file")

    with open(b.path / "note", "ab") as f:
        f.write(b", appended on b")
    wait_until(
        lambda: (a.path / "note").read_bytes() == b"written on a, appended on b",
        SEEN_WITHIN,
        "appended data",
    )

    (b.path / "dir").mkdir()
    os.rename(a.path / "note", a.path / "renamed")
    wait_until(lambda: sorted(os.listdir(b.path)) == ["dir", "renamed"], SEEN_WITHIN, "rename")

    os.chmod(b.path / "renamed", 0o600)
    wait_until(lambda: (a.path / "renamed").stat().st_mode & 0o777 == 0o600, SEEN_WITHIN, "chmod")

    (a.path / "renamed").unlink()
    wait_until(lambda: not (b.path / "renamed").exists(), SEEN_WITHIN, "unlink")


def test_overwritten_file_is_not_served_from_a_stale_page_cache(two_mounts):
    a, b = two_mounts
    (a.path / "f").write_bytes(b"version one")
    assert wait_until(lambda: (b.path / "f").read_bytes() == b"version one", SEEN_WITHIN, "v1")
    with open(a.path / "f", "r+b") as f:
        f.write(b"VERSION TWO")
    # Same size, so only a fresh open (keep_cache off) shows the new bytes.
    wait_until(lambda: (b.path / "f").read_bytes() == b"VERSION TWO", SEEN_WITHIN, "v2")


def _stat_in_child(path: Path, timeout: float) -> str:
    """stat(2) `path` in a child process, so a hanging mount cannot hang the test."""
    code = (
        "import os, sys\n"
        "try:\n"
        "    os.stat(sys.argv[1]); print('ok')\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "hung"
    return out.stdout.strip()


def test_brick_killed_and_restarted_while_mounted(volume):
    (volume.path / "before").write_bytes(b"written before the crash")
    volume.brick.kill()

    # While the brick is gone, requests fail instead of hanging.
    answer = _stat_in_child(volume.path / "missing-name", 20)
    assert answer in (str(errno.ENOTCONN), str(errno.ENOENT)), answer

    volume.brick.restart()

    def writes_again() -> bool:
        (volume.path / "after").write_bytes(b"written after the restart")
        return True

    wait_until(writes_again, RECOVER_WITHIN, "the mount to work again after the restart")
    assert (volume.path / "after").read_bytes() == b"written after the restart"
    assert (volume.path / "before").read_bytes() == b"written before the crash"
    assert sorted(os.listdir(volume.path)) == ["after", "before"]
    assert volume.proc.poll() is None


def test_open_file_survives_a_brick_restart(volume):
    path = volume.path / "kept-open"
    with open(path, "w+b", buffering=0) as f:
        f.write(b"first half, ")
        volume.brick.kill()
        volume.brick.restart()

        def write_more() -> bool:
            f.write(b"second half")
            return True

        wait_until(write_more, RECOVER_WITHIN, "writing through the open file again")
    assert path.read_bytes() == b"first half, second half"


def test_zero_cache_timeouts_show_changes_at_once(brick_factory, mount_factory, tmp_path):
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    options = "entry-timeout=0,attr-timeout=0"
    a = mount_factory(volfile, "mnt-a", options)
    b = mount_factory(volfile, "mnt-b", options)
    assert not (b.path / "f").exists()
    (a.path / "f").write_bytes(b"12345")
    # Nothing is cached, so the other mount sees each change on its very next look.
    assert (b.path / "f").stat().st_size == 5
    with open(a.path / "f", "ab") as f:
        f.write(b"678")
    assert (b.path / "f").stat().st_size == 8
    (a.path / "f").unlink()
    assert not (b.path / "f").exists()
