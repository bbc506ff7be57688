"""Unit tests of performance/quick-read over a real posix brick.

storage/posix answers quick-read's content request (CONTENT_KEY) in lookup; a file that was
created or written through us and not looked up since is kept from its first read instead.
"""

from __future__ import annotations

import errno
import os

import pytest
import trio

from glusterpy.xlator import SetAttr
from glusterpy.xlators.performance.quick_read import CONTENT_KEY, QuickRead
from tests.support.perf import (
    ROOT,
    check_errors,
    create_file,
    raises_errno,
    registered,
    run_stack,
    stack_volfile,
    wait_for,
)

QR = "performance/quick-read"


def qr_stack(directory, body, **options):
    return run_stack(directory, body, (QR, options), error_gen=True)


async def small_file(top, name: bytes, data: bytes) -> bytes:
    fh, gfid = await create_file(top, name)
    await top.write(fh, 0, data)
    await top.release(fh)
    return gfid


async def read_whole(top, gfid: bytes) -> tuple[int, bytes]:
    fh = await top.open(gfid, os.O_RDONLY)
    data = await top.read(fh, 0, 128 << 10)
    return fh, data


def test_content_kept_from_the_first_read_serves_lazy_opens(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        gfid = await small_file(top, b"f", b"small mail")
        fh, data = await read_whole(top, gfid)
        assert data == b"small mail"
        await top.release(fh)
        calls = len(errors.calls)
        fh, data = await read_whole(top, gfid)
        assert fh < 0 and data == b"small mail"
        assert await top.read(fh, 6, 100) == b"mail"
        await top.flush(fh, b"owner")
        await top.release(fh)
        assert len(errors.calls) == calls  # open, read, flush and release stayed here

    qr_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_content_comes_with_the_lookup_when_the_child_answers_it(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        gfid = await small_file(top, b"f", b"delivered")
        iatt, reply = await top.lookup(ROOT, b"f")
        assert CONTENT_KEY not in reply
        reads = errors.count("read")
        fh, data = await read_whole(top, gfid)
        assert data == b"delivered" and fh < 0
        assert errors.count("read") == reads
        await top.release(fh)

    qr_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_a_change_by_another_client_shows_after_the_timeout(tmp_path):
    async def body(top, graph):
        gfid = await small_file(top, b"f", b"version 1")
        fh, data = await read_whole(top, gfid)
        await top.release(fh)
        (tmp_path / "f").write_bytes(b"version 2")
        with trio.fail_after(10):
            while True:
                fh, data = await read_whole(top, gfid)
                await top.release(fh)
                if data == b"version 2":
                    break
                assert data == b"version 1"
                await trio.sleep(0.05)

    qr_stack(tmp_path, body, **{"cache-timeout": "1"})


def test_writes_truncates_and_writable_opens_drop_the_content(tmp_path):
    async def body(top, graph):
        gfid = await small_file(top, b"f", b"abcdef")
        fh, _ = await read_whole(top, gfid)
        await top.release(fh)
        wfh = await top.open(gfid, os.O_RDWR)
        assert wfh > 0
        await top.write(wfh, 0, b"X")
        fh, data = await read_whole(top, gfid)
        assert data == b"Xbcdef"
        await top.release(fh)
        await top.setattr(gfid, SetAttr(size=2))
        fh, data = await read_whole(top, gfid)
        assert data == b"Xb"
        await top.release(fh)
        await top.release(wfh)
        fh = await top.open(gfid, os.O_WRONLY | os.O_TRUNC)
        await top.release(fh)
        fh, data = await read_whole(top, gfid)
        assert data == b""
        await top.release(fh)

    qr_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_a_lazy_handle_opens_the_child_when_a_fop_needs_it(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        gfid = await small_file(top, b"f", b"locked")
        fh, _ = await read_whole(top, gfid)
        await top.release(fh)
        fh, _ = await read_whole(top, gfid)
        assert (await top.fstat(fh)).size == 6
        assert errors.count("open") == 1
        await top.fsync(fh, False)
        assert errors.count("open") == 2
        await raises_errno(errno.EBADF, top.write(fh, 0, b"no"))
        await top.flush(fh, b"owner")
        await top.release(fh)
        assert errors.count("release") == 3

    qr_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_size_limits_bound_what_is_kept(tmp_path):
    async def body(top, graph):
        qr = graph.top
        for i in range(4):
            gfid = await small_file(top, b"f%d" % i, b"%d" % i * (40 << 10))
            fh, _ = await read_whole(top, gfid)
            await top.release(fh)
            assert qr.cached_bytes <= 100 << 10
        big = await small_file(top, b"big", b"b" * (70 << 10))
        fh, _ = await read_whole(top, big)
        await top.release(fh)
        assert qr.content(big) is None

    qr_stack(tmp_path, body, **{"cache-size": "100KB", "cache-timeout": "60"})


def test_content_read_across_a_write_is_not_kept(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        gfid = await small_file(top, b"f", b"old")
        wfh = await top.open(gfid, os.O_RDWR)
        gate = errors.gates["read"] = trio.Event()
        answers = []

        async def slow_read():
            fh, data = await read_whole(top, gfid)
            answers.append(data)
            await top.release(fh)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_read)
            await wait_for(lambda: errors.count("read") == 1, 5)
            await top.write(wfh, 0, b"NEW")
            del errors.gates["read"]
            gate.set()
        assert answers == [b"old"]
        fh, data = await read_whole(top, gfid)
        assert data == b"NEW"
        await top.release(fh)
        await top.release(wfh)

    qr_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_options():
    kind = registered(QR)
    assert kind.factory is QuickRead
    assert kind.find_option("max-file-size").default == "64KB"
    assert kind.find_option("cache-timeout").default == "1"


@pytest.mark.parametrize(
    "option, expected",
    [
        ("max-file-size 2MB", "above the maximum"),
        ("cache-timeout 0", "below the minimum"),
        ("cache-timeout 61", "above the maximum"),
        ("page-count 4", "unknown option 'page-count'"),
    ],
)
def test_bad_options_are_refused(option, expected):
    text = stack_volfile("/srv/b", (QR, dict([option.split(" ", 1)])))
    problems = check_errors(text)
    assert len(problems) == 1 and expected in problems[0]
