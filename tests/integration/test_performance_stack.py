"""POSIX correctness through the GlusterFS 2.0 client stack of performance translators.

A real brick daemon and real FUSE mounts of a client volfile that stacks write-behind,
read-ahead, io-cache, quick-read and stat-prefetch (md-cache) over protocol/client, as
GlusterFS 2.0's generated client volfiles did. What the mount shows is checked against the
brick directory; a second mount plays another client, whose changes must show once the
caches' one-second timeouts have passed (polled with a bound, never timed). Each test runs
once per FUSE binding (pyfuse3 and our kernel session), since both serve users.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import bricks
from tests.support.mounts import wait_until

pytestmark = pytest.mark.integration
ALL_BINDINGS = True

MiB = 1 << 20
VISIBLE_WITHIN = 15.0  # seconds: kernel attr/entry timeouts (1 s) plus each cache's (1 s)

PERFORMANCE_STACK = """
volume writebehind
    type performance/write-behind
    option cache-size 4MB
    subvolumes client
end-volume

volume readahead
    type performance/read-ahead
    option page-count 4
    subvolumes writebehind
end-volume

volume iocache
    type performance/io-cache
    option cache-size 64MB
    option cache-timeout 1
    subvolumes readahead
end-volume

volume quickread
    type performance/quick-read
    option cache-timeout 1
    option max-file-size 64kB
    subvolumes iocache
end-volume

volume statprefetch
    type performance/stat-prefetch
    option md-cache-timeout 1
    subvolumes quickread
end-volume
"""


def perf_volfile(path: Path, port: int, subvolume: str = "brick") -> Path:
    bricks.write_client_volfile(path, port, subvolume=subvolume)
    path.write_text(path.read_text() + PERFORMANCE_STACK)
    return path


@pytest.fixture
def perf_volume(brick_factory, mount_factory, tmp_path):
    """One brick and two mounts of it through the performance stack: (brick, mnt1, mnt2)."""
    brick = brick_factory()
    volfile = perf_volfile(tmp_path / "client.vol", brick.port)
    first = mount_factory(volfile, name="mnt1")
    second = mount_factory(volfile, name="mnt2")
    return brick, first, second


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_and_read_back_with_checksum(perf_volume):
    brick, mnt, _ = perf_volume
    data = os.urandom(5 * MiB + 12345)
    with open(mnt.path / "big", "wb") as f:
        for start in range(0, len(data), 100_000):
            f.write(data[start : start + 100_000])
    expected = hashlib.sha256(data).hexdigest()
    assert sha256(brick.directory / "big") == expected  # close() returned: it is on the brick
    assert sha256(mnt.path / "big") == expected
    with open(mnt.path / "big", "rb") as f:
        f.seek(3 * MiB + 7)
        assert f.read(1000) == data[3 * MiB + 7 : 3 * MiB + 1007]


def test_close_means_the_brick_holds_the_data(perf_volume):
    brick, mnt, _ = perf_volume
    for i in range(30):
        message = os.urandom(1000 + i * 997)
        with open(mnt.path / f"msg{i}", "wb") as f:
            f.write(message[:500])
            f.write(message[500:])
        assert (brick.directory / f"msg{i}").read_bytes() == message
    fd = os.open(mnt.path / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"fsynced data")
        os.fsync(fd)
        assert (brick.directory / "synced").read_bytes() == b"fsynced data"
    finally:
        os.close(fd)
    fd = os.open(mnt.path / "o_sync", os.O_WRONLY | os.O_CREAT | os.O_SYNC, 0o644)
    try:
        for i in range(5):
            os.write(fd, b"%d" % i)
            assert (brick.directory / "o_sync").read_bytes() == b"01234"[: i + 1]
    finally:
        os.close(fd)


def test_append(perf_volume):
    brick, mnt, _ = perf_volume
    path = mnt.path / "log"
    for line in (b"one\n", b"two\n", b"three\n"):
        with open(path, "ab") as f:
            f.write(line)
    assert path.read_bytes() == b"one\ntwo\nthree\n"
    with open(path, "ab") as f:
        for i in range(200):
            f.write(b"line %d\n" % i)
    expected = b"one\ntwo\nthree\n" + b"".join(b"line %d\n" % i for i in range(200))
    assert path.read_bytes() == expected
    assert (brick.directory / "log").read_bytes() == expected


def test_truncate(perf_volume):
    brick, mnt, _ = perf_volume
    path = mnt.path / "t"
    path.write_bytes(b"0123456789")
    assert path.read_bytes() == b"0123456789"
    os.truncate(path, 4)
    assert path.read_bytes() == b"0123"
    assert path.stat().st_size == 4
    os.truncate(path, 8)
    assert path.read_bytes() == b"0123\0\0\0\0"
    with open(path, "r+b") as f:
        f.write(b"abcdef")
        f.truncate(3)  # after writes still behind: the truncate must win
    assert path.read_bytes() == b"abc"
    with open(path, "wb") as f:
        f.write(b"x")
    assert path.read_bytes() == b"x"
    assert (brick.directory / "t").read_bytes() == b"x"


def test_a_change_by_another_mount_is_seen_after_the_timeouts(perf_volume):
    brick, first, second = perf_volume
    small, large = first.path / "mail", first.path / "spool"
    small.write_bytes(b"version 1")
    large.write_bytes(b"A" * (2 * MiB))
    assert (second.path / "mail").read_bytes() == b"version 1"  # now cached by the second
    assert (second.path / "spool").read_bytes()[:10] == b"A" * 10

    small.write_bytes(b"version 2, a bit longer")
    with open(large, "r+b") as f:
        f.seek(MiB)
        f.write(b"B" * 10)

    wait_until(
        lambda: (second.path / "mail").read_bytes() == b"version 2, a bit longer",
        VISIBLE_WITHIN,
        "the second mount to see the new small file",
    )
    wait_until(
        lambda: (second.path / "spool").read_bytes()[MiB : MiB + 10] == b"B" * 10,
        VISIBLE_WITHIN,
        "the second mount to see the change in the large file",
    )
    (second.path / "mail").unlink()
    wait_until(
        lambda: not (first.path / "mail").exists(),
        VISIBLE_WITHIN,
        "the first mount to see the unlink",
    )


def test_many_small_files_read_back(perf_volume):
    brick, mnt, _ = perf_volume
    contents = {f"m{i:03d}": os.urandom(1 + i * 300) for i in range(60)}
    (mnt.path / "new").mkdir()
    for name, data in contents.items():
        (mnt.path / "new" / name).write_bytes(data)
    for _round in range(2):
        assert sorted(os.listdir(mnt.path / "new")) == sorted(contents)
        for name, data in contents.items():
            assert (mnt.path / "new" / name).read_bytes() == data
    for name, data in contents.items():
        assert (brick.directory / "new" / name).read_bytes() == data


@pytest.fixture
def full_brick(tmp_path):
    """A brick whose export directory is a 3 MiB tmpfs, so that writes run out of space."""
    base = tmp_path / "small"
    export = base / "export"
    export.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(export)], check=True, timeout=30
    )
    brick = None
    try:
        brick = bricks.start_brick(base, subvolume="small")
        yield brick
    finally:
        if brick is not None:
            brick.kill()
        subprocess.run(["umount", "-l", str(export)], check=False, timeout=30)


def test_running_out_of_space_is_reported_by_write_or_close(full_brick, mount_factory, tmp_path):
    volfile = perf_volfile(tmp_path / "small.vol", full_brick.port, subvolume="small")
    mnt = mount_factory(volfile, name="mnt-small")
    chunk = b"s" * (256 << 10)
    with pytest.raises(OSError) as info:
        with open(mnt.path / "too-big", "wb") as f:
            for _ in range(32):
                f.write(chunk)
                f.flush()
    assert info.value.errno == errno.ENOSPC
