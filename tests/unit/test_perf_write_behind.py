"""Unit tests of performance/write-behind over a real storage/posix brick.

Writes are answered before they reach the disk, so several tests look at the brick file right
after a write to tell a written-behind write from a written-through one; trio runs the
background task only at the next checkpoint, which makes that look deterministic.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess

import pytest

from glusterpy.xlator import Flock, SetAttr
from glusterpy.xlators.performance.write_behind import WriteBehind
from tests.support.perf import (
    check_errors,
    create_file,
    raises_errno,
    registered,
    run_stack,
    stack_volfile,
)

WB = "performance/write-behind"


def wb_stack(directory, body, error_gen=False, **options):
    return run_stack(directory, body, (WB, options), error_gen=error_gen)


def on_disk(directory, name="f") -> bytes:
    return (directory / name).read_bytes()


def test_writes_are_acknowledged_early_and_on_disk_after_flush(tmp_path):
    async def body(top, graph):
        fh, _ = await create_file(top, b"f")
        assert await top.write(fh, 0, b"hello ") == 6
        assert await top.write(fh, 6, b"world") == 5
        assert on_disk(tmp_path) == b""  # still queued
        await top.flush(fh, b"owner")
        assert on_disk(tmp_path) == b"hello world"
        await top.release(fh)

    wb_stack(tmp_path, body)


def test_contiguous_writes_are_joined_and_overlapping_ones_keep_their_order(tmp_path):
    async def body(top, graph):
        fh, _ = await create_file(top, b"f")
        for i in range(200):
            await top.write(fh, i * 10, b"%010d" % i)
        for i in range(50):
            await top.write(fh, 0, bytes([65 + i % 26]) * 5)
        await top.fsync(fh, False)
        expected = bytearray(b"".join(b"%010d" % i for i in range(200)))
        expected[0:5] = bytes([65 + 49 % 26]) * 5
        assert on_disk(tmp_path) == bytes(expected)
        # Joined: far fewer child writes than calls.
        assert graph.translators["errors"].calls.count("write") < 250 / 2
        await top.release(fh)

    wb_stack(tmp_path, body, error_gen=True)


def test_read_stat_and_lookup_see_the_pending_writes(tmp_path):
    async def body(top, graph):
        fh, gfid = await create_file(top, b"f")
        await top.write(fh, 0, b"x" * 1000)
        assert await top.read(fh, 0, 2000) == b"x" * 1000
        await top.write(fh, 1000, b"y" * 24)
        assert (await top.stat(gfid)).size == 1024
        await top.write(fh, 1024, b"z")
        assert (await top.fstat(fh)).size == 1025
        await top.write(fh, 1025, b"z")
        iatt, _ = await top.lookup(bytes(15) + b"\x01", b"f")
        assert iatt.size == 1026
        await top.release(fh)

    wb_stack(tmp_path, body)


def test_truncate_after_pending_writes_wins(tmp_path):
    async def body(top, graph):
        fh, gfid = await create_file(top, b"f")
        await top.write(fh, 0, b"a" * 4096)
        iatt = await top.setattr(gfid, SetAttr(size=10))
        assert iatt.size == 10
        await top.flush(fh, b"o")
        await top.release(fh)

    wb_stack(tmp_path, body)
    assert on_disk(tmp_path) == b"a" * 10


def test_a_failed_background_write_fails_the_next_write_and_the_flush(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, _ = await create_file(top, b"f")
        errors.failing.add("write")
        assert await top.write(fh, 0, b"lost") == 4  # acknowledged, then fails below
        await raises_errno(errno.EIO, top.fsync(fh, False))
        errors.failing.clear()
        await top.fsync(fh, False)  # reported once; the handle works again

        errors.failing.add("write")
        await top.write(fh, 0, b"lost again")
        await top.fstat(fh)  # waits for the queue: the failure is now known
        await raises_errno(errno.EIO, top.write(fh, 10, b"more"))
        errors.failing.clear()
        await raises_errno(errno.EIO, top.write(fh, 10, b"more"))  # kept until a flush
        await raises_errno(errno.EIO, top.flush(fh, b"o"))
        await top.flush(fh, b"o")
        await top.release(fh)

    wb_stack(tmp_path, body, error_gen=True)


def test_a_failure_is_reported_on_every_handle_open_on_the_file(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        writer, gfid = await create_file(top, b"f")
        syncer = await top.open(gfid, os.O_RDWR)
        errors.failing.add("write")
        await top.write(writer, 0, b"lost")
        await top.fstat(writer)  # waits for the queue: the write has failed now
        errors.failing.clear()
        await raises_errno(errno.EIO, top.fsync(syncer, False))
        later = await top.open(gfid, os.O_RDWR)
        await top.fsync(later, False)  # opened after the failure: not its business
        await raises_errno(errno.EIO, top.flush(writer, b"o"))
        for fh in (writer, syncer, later):
            await top.release(fh)

    wb_stack(tmp_path, body, error_gen=True)


def test_a_failing_close_still_drops_the_locks_of_its_owner(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        other = await top.open(gfid, os.O_RDWR)
        await top.lk(fh, fcntl.F_SETLK, Flock(fcntl.F_WRLCK, 0, 0, 1, b"closer"))
        errors.failing.add("write")
        await top.write(fh, 0, b"lost")
        await top.fstat(fh)
        errors.failing.clear()
        await raises_errno(errno.EIO, top.flush(fh, b"closer"))
        await top.lk(other, fcntl.F_SETLK, Flock(fcntl.F_WRLCK, 0, 0, 2, b"next"))
        await raises_errno(errno.EIO, top.flush(other, b"next"))  # it was open too
        await top.release(fh)
        await top.release(other)

    run_stack(tmp_path, body, ("features/locks", {}), (WB, {}), error_gen=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs, so that writes really run out of space."""
    target = tmp_path / "small"
    target.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)], check=True, timeout=30
    )
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, timeout=30)


def test_enospc_of_a_written_behind_write_surfaces_on_close(small_fs):
    async def body(top, graph):
        fh, _ = await create_file(top, b"big")
        chunk = b"m" * (64 << 10)
        with pytest.raises(OSError) as info:
            for i in range(16):
                await top.write(fh, i * len(chunk), chunk)
            await top.flush(fh, b"o")
        assert info.value.errno == errno.ENOSPC
        await top.release(fh)

    wb_stack(small_fs, body)


def test_o_sync_handles_write_through(tmp_path):
    async def body(top, graph):
        fh, _ = await create_file(top, b"f", os.O_RDWR | os.O_SYNC)
        await top.write(fh, 0, b"durable")
        assert on_disk(tmp_path) == b"durable"
        await top.release(fh)

    wb_stack(tmp_path, body)


def test_strict_o_direct_writes_through_o_direct_handles(tmp_path):
    async def body(top, graph):
        fh, _ = await create_file(top, b"f")
        graph.top._handles[fh].flags |= os.O_DIRECT
        await top.write(fh, 0, b"direct")
        assert on_disk(tmp_path) == b"direct"
        await top.release(fh)

    wb_stack(tmp_path, body, **{"strict-O_DIRECT": "on"})


def test_the_first_nbytes_are_written_through(tmp_path):
    async def body(top, graph):
        fh, _ = await create_file(top, b"f")
        await top.write(fh, 0, b"12345")
        assert on_disk(tmp_path) == b"12345"
        await top.write(fh, 5, b"678")
        assert on_disk(tmp_path) == b"12345"
        await top.release(fh)

    wb_stack(tmp_path, body, **{"disable-for-first-nbytes": "4"})


def test_the_window_bounds_the_queued_bytes(tmp_path):
    async def body(top, graph):
        wb = graph.top
        fh, _ = await create_file(top, b"f")
        chunk = b"w" * (100 << 10)
        for i in range(12):
            await top.write(fh, i * len(chunk), chunk)
            assert wb._queued_bytes <= wb.window
        await top.write(fh, 12 * len(chunk), b"W" * (600 << 10))  # bigger than the window
        assert wb._queued_bytes == 0
        await top.flush(fh, b"o")
        await top.release(fh)
        assert len(on_disk(tmp_path)) == 12 * len(chunk) + (600 << 10)

    wb_stack(tmp_path, body, **{"window-size": "512KB"})


def test_release_without_flush_still_writes_everything(tmp_path):
    async def body(top, graph):
        fh, _ = await create_file(top, b"f")
        await top.write(fh, 0, b"kept")
        await top.release(fh)
        assert on_disk(tmp_path) == b"kept"

    wb_stack(tmp_path, body)


def test_stop_sends_the_queue_down(tmp_path):
    async def body(top, graph):
        fh, _ = await create_file(top, b"f")
        await top.write(fh, 0, b"at shutdown")

    wb_stack(tmp_path, body)
    assert on_disk(tmp_path) == b"at shutdown"


def test_options_are_declared_with_glusterfs_names_and_defaults():
    kind = registered(WB)
    assert kind.factory is WriteBehind
    assert kind.find_option("window-size").key == "cache-size"
    assert kind.find_option("cache-size").default == "1MB"
    for key in ("flush-behind", "strict-O_DIRECT", "strict-write-ordering", "enable-O_SYNC"):
        assert kind.find_option(key) is not None


@pytest.mark.parametrize(
    "option, expected",
    [
        ("cache-size 1KB", "option 'cache-size' expects size"),
        ("flush-behind maybe", "option 'flush-behind' expects boolean"),
        ("colour blue", "unknown option 'colour'"),
    ],
)
def test_bad_options_are_refused(option, expected):
    text = stack_volfile("/srv/b", (WB, dict([option.split(" ", 1)])))
    problems = check_errors(text)
    assert len(problems) == 1 and expected in problems[0]
