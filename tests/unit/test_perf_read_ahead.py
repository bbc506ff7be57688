"""Unit tests of performance/read-ahead over a real posix brick."""

from __future__ import annotations

import os
import random

import pytest
import trio

from glusterpy.xlator import SetAttr
from glusterpy.xlators.performance import read_ahead
from glusterpy.xlators.performance.read_ahead import ReadAhead
from tests.support.perf import (
    check_errors,
    create_file,
    registered,
    run_stack,
    stack_volfile,
    wait_for,
)

RA = "performance/read-ahead"


def ra_stack(directory, body, **options):
    return run_stack(directory, body, (RA, options), error_gen=True)


async def file_with(top, data: bytes) -> tuple[int, bytes]:
    fh, gfid = await create_file(top, b"f")
    await top.write(fh, 0, data)
    await top.release(fh)
    return await top.open(gfid, os.O_RDWR), gfid


def test_sequential_reads_become_few_big_reads(tmp_path):
    data = os.urandom((1 << 20) + 777)

    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, _ = await file_with(top, data)
        got = bytearray()
        while chunk := await top.read(fh, len(got), 64 << 10):
            got += chunk
        assert got == data
        # 17 application reads; a 512 KiB window needs about 3 (plus the end-of-file one).
        assert errors.count("read") <= 4
        await top.release(fh)
        assert graph.top.kept_bytes == 0

    ra_stack(tmp_path, body)


def test_random_reads_pass_down(tmp_path):
    data = os.urandom(1 << 20)

    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, _ = await file_with(top, data)
        await top.read(fh, 0, 10)
        before = errors.count("read")
        rng = random.Random(7)
        for _ in range(10):
            offset = rng.randrange(600 << 10, len(data))
            assert await top.read(fh, offset, 100) == data[offset : offset + 100]
        assert errors.count("read") == before + 10
        await top.release(fh)

    ra_stack(tmp_path, body)


def test_writes_and_truncates_through_us_drop_what_was_read_ahead(tmp_path):
    async def body(top, graph):
        fh, gfid = await file_with(top, b"o" * 1000)
        other = await top.open(gfid, os.O_RDWR)
        assert await top.read(fh, 0, 10) == b"o" * 10
        await top.write(other, 10, b"W")
        assert await top.read(fh, 10, 5) == b"Woooo"
        await top.setattr(gfid, SetAttr(size=17))
        assert await top.read(fh, 15, 100) == b"oo"
        await top.release(other)
        await top.release(fh)

    ra_stack(tmp_path, body)


def test_a_change_by_another_client_shows_after_the_lifetime(tmp_path):
    async def body(top, graph):
        fh, _ = await file_with(top, b"O" * 100_000)
        assert await top.read(fh, 0, 1) == b"O"
        (tmp_path / "f").write_bytes(b"N" * 100_000)
        offset = 1
        assert await top.read(fh, offset, 1) == b"O"  # kept, within the lifetime
        with trio.fail_after(10 * read_ahead.BUFFER_LIFETIME):
            while True:
                offset += 1
                if await top.read(fh, offset, 1) == b"N":
                    break
                await trio.sleep(0.05)
        await top.release(fh)

    ra_stack(tmp_path, body)


def test_a_read_answered_across_a_write_is_not_kept(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await file_with(top, b"before" * 10)
        gate = errors.gates["read"] = trio.Event()
        answers = []

        async def slow_read():
            answers.append(await top.read(fh, 0, 6))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_read)
            await wait_for(lambda: errors.count("read") == 1, 5)
            await top.write(fh, 6, b"AFTER!")
            del errors.gates["read"]
            gate.set()
        assert answers == [b"before"]
        assert await top.read(fh, 6, 6) == b"AFTER!"
        await top.release(fh)

    ra_stack(tmp_path, body)


def test_memory_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(read_ahead, "MAX_KEPT", 1 << 20)

    async def body(top, graph):
        ra = graph.top
        fh, gfid = await file_with(top, os.urandom(2 << 20))
        handles = [fh] + [await top.open(gfid, os.O_RDONLY) for _ in range(4)]
        for h in handles:
            await top.read(h, 0, 4096)
            assert ra.kept_bytes <= read_ahead.MAX_KEPT
        assert all(len(s.data) <= ra.window for s in ra._streams.values())
        for h in handles:
            await top.release(h)
        assert ra.kept_bytes == 0

    ra_stack(tmp_path, body, **{"page-count": "2", "page-size": "256KB"})


def test_options():
    kind = registered(RA)
    assert kind.factory is ReadAhead
    assert kind.find_option("page-count").default == "4"
    assert kind.find_option("force-atime-update") is not None


@pytest.mark.parametrize(
    "option, expected",
    [
        ("page-count 17", "above the maximum"),
        ("page-count 0", "below the minimum"),
        ("page-size 1KB", "below the minimum"),
        ("cache-size 1MB", "unknown option 'cache-size'"),
    ],
)
def test_bad_options_are_refused(option, expected):
    text = stack_volfile("/srv/b", (RA, dict([option.split(" ", 1)])))
    problems = check_errors(text)
    assert len(problems) == 1 and expected in problems[0]
