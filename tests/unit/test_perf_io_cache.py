"""Unit tests of performance/io-cache over a real posix brick.

"Another client" is played by changing the brick's files directly; expiry is checked by
polling with a bound, never by timing.
"""

from __future__ import annotations

import os

import pytest
import trio

from glusterpy.xlator import SetAttr
from glusterpy.xlators.performance.io_cache import PAGE_SIZE, IoCache
from tests.support.perf import (
    ROOT,
    check_errors,
    create_file,
    registered,
    run_stack,
    stack_volfile,
    wait_for,
)

IOC = "performance/io-cache"


def ioc_stack(directory, body, **options):
    return run_stack(directory, body, (IOC, options), error_gen=True)


async def file_with(top, name: bytes, data: bytes) -> tuple[int, bytes]:
    fh, gfid = await create_file(top, name)
    await top.write(fh, 0, data)
    return fh, gfid


async def open_again(top, gfid: bytes, fh: int) -> int:
    await top.release(fh)
    return await top.open(gfid, os.O_RDWR)


def test_reads_are_served_from_pages(tmp_path):
    data = os.urandom(3 * PAGE_SIZE + 1000)

    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await file_with(top, b"f", data)
        assert await top.read(fh, 0, len(data) + 10) == data
        reads = errors.count("read")
        assert await top.read(fh, 100, 2 * PAGE_SIZE) == data[100 : 100 + 2 * PAGE_SIZE]
        assert await top.read(fh, len(data) - 10, 100) == data[-10:]
        assert await top.read(fh, len(data) + 5, 100) == b""
        assert errors.count("read") == reads
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_write_and_truncate_through_us_drop_the_pages(tmp_path):
    async def body(top, graph):
        fh, gfid = await file_with(top, b"f", b"a" * 5000)
        assert await top.read(fh, 0, 10) == b"a" * 10
        await top.write(fh, 2, b"BB")
        assert await top.read(fh, 0, 10) == b"aaBBaaaaaa"
        await top.setattr(gfid, SetAttr(size=3))
        assert await top.read(fh, 0, 10) == b"aaB"
        await top.release(fh)
        fh = await top.open(gfid, os.O_RDWR | os.O_TRUNC)
        assert await top.read(fh, 0, 10) == b""
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_a_change_by_another_client_shows_after_the_timeout(tmp_path):
    async def body(top, graph):
        fh, gfid = await file_with(top, b"f", b"old content")
        assert await top.read(fh, 0, 100) == b"old content"
        (tmp_path / "f").write_bytes(b"new content, longer")
        assert await top.read(fh, 0, 100) == b"old content"  # within the timeout
        with trio.fail_after(10):
            while await top.read(fh, 0, 100) != b"new content, longer":
                await trio.sleep(0.05)
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"cache-timeout": "1"})


def test_a_same_size_rewrite_with_the_old_mtime_shows_after_the_timeout(tmp_path):
    async def body(top, graph):
        fh, gfid = await file_with(top, b"f", b"AAAA")
        assert await top.read(fh, 0, 100) == b"AAAA"
        before = os.stat(tmp_path / "f")
        (tmp_path / "f").write_bytes(b"BBBB")
        os.utime(tmp_path / "f", ns=(before.st_atime_ns, before.st_mtime_ns))
        with trio.fail_after(10):
            while await top.read(fh, 0, 100) != b"BBBB":
                await trio.sleep(0.05)
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"cache-timeout": "1"})


def test_timeout_zero_reads_from_the_child_every_time(tmp_path):
    async def body(top, graph):
        fh, gfid = await file_with(top, b"f", b"one")
        assert await top.read(fh, 0, 100) == b"one"
        (tmp_path / "f").write_bytes(b"two!")
        assert await top.read(fh, 0, 100) == b"two!"
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"cache-timeout": "0"})


def test_cache_size_bounds_memory_and_lower_priority_goes_first(tmp_path):
    keep = os.urandom(2 << 20)
    other = os.urandom(3 << 20)

    async def body(top, graph):
        ioc = graph.top
        fa, ga = await file_with(top, b"a.keep", keep)
        fb, gb = await file_with(top, b"b", other)
        assert await top.read(fa, 0, len(keep)) == keep
        assert await top.read(fb, 0, len(other)) == other
        assert ioc.cached_bytes <= ioc.cache_size
        assert len(ioc.files[ga].pages) == len(keep) // PAGE_SIZE
        reads = graph.translators["errors"].count("read")
        assert await top.read(fa, 0, len(keep)) == keep
        assert graph.translators["errors"].count("read") == reads
        await top.release(fa)
        await top.release(fb)

    ioc_stack(tmp_path, body, **{"cache-size": "4MB", "priority": "*.keep:5,*.tmp:0"})


def test_files_outside_the_size_limits_are_not_cached(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await file_with(top, b"f", b"x" * 2048)
        fh = await open_again(top, gfid, fh)
        await top.read(fh, 0, 100)
        await top.read(fh, 0, 100)
        assert errors.count("read") == 2
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"max-file-size": "1KB"})


def test_a_read_answered_across_a_write_is_not_kept(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await file_with(top, b"f", b"before")
        gate = errors.gates["read"] = trio.Event()
        answers = []

        async def slow_read():
            answers.append(await top.read(fh, 0, 100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_read)
            await wait_for(lambda: errors.count("read") == 1, 5)
            await top.write(fh, 0, b"AFTER!")
            del errors.gates["read"]
            assert await top.read(fh, 0, 100) == b"AFTER!"  # caches the new page
            gate.set()
        assert answers == [b"before"]
        assert await top.read(fh, 0, 100) == b"AFTER!"
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"cache-timeout": "60"})


def test_lookup_gives_the_size_limits_their_attributes(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await file_with(top, b"f", b"data")
        await top.release(fh)
        await top.lookup(ROOT, b"f")
        fh = await top.open(gfid, os.O_RDONLY)
        assert await top.read(fh, 0, 10) == b"data"
        assert errors.count("fstat") == 0
        await top.release(fh)

    ioc_stack(tmp_path, body, **{"max-file-size": "1MB"})


def test_options():
    kind = registered(IOC)
    assert kind.factory is IoCache
    assert kind.find_option("force-revalidate-timeout").key == "cache-timeout"
    assert kind.find_option("cache-size").default == "32MB"


@pytest.mark.parametrize(
    "option, expected",
    [
        ("cache-size 1MB", "below the minimum"),
        ("cache-timeout 61", "above the maximum"),
        ("priority *.html", "is not pattern:priority"),
        ("priority *.html:high", "is not pattern:priority"),
        ("page-count 4", "unknown option 'page-count'"),
    ],
)
def test_bad_options_are_refused(option, expected):
    text = stack_volfile("/srv/b", (IOC, dict([option.split(" ", 1)])))
    problems = check_errors(text)
    assert len(problems) == 1 and expected in problems[0]
