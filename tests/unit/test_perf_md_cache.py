"""Unit tests of performance/md-cache (and its alias stat-prefetch) over a real posix brick.

"Another client" is played by changing the brick's files directly. Expiry is checked by
polling with a bound, never by timing how fast something happens.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest
import trio

from glusterpy.xlator import SetAttr
from glusterpy.xlators.performance.md_cache import MdCache
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

MD = "performance/md-cache"


def md_stack(directory, body, **options):
    options.setdefault("md-cache-timeout", "1")
    return run_stack(directory, body, (MD, options), error_gen=True)


def test_stat_is_served_from_the_cache_until_the_timeout(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        await top.release(fh)
        assert (await top.stat(gfid)).size == 0
        (tmp_path / "f").write_bytes(b"changed by another client")
        before = errors.count("stat")
        assert (await top.stat(gfid)).size == 0
        assert errors.count("stat") == before
        with trio.fail_after(10):
            while (await top.stat(gfid)).size != 25:
                await trio.sleep(0.05)

    md_stack(tmp_path, body)


def test_lookup_is_served_from_the_cache_and_expires(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        await top.release(fh)
        iatt, _ = await top.lookup(ROOT, b"f")
        before = errors.count("lookup")
        again, _ = await top.lookup(ROOT, b"f")
        assert again.gfid == gfid and errors.count("lookup") == before
        os.unlink(tmp_path / "f")
        with trio.fail_after(10):
            while True:
                try:
                    await top.lookup(ROOT, b"f")
                except FileNotFoundError:
                    break
                await trio.sleep(0.05)

    md_stack(tmp_path, body)


def test_write_and_setattr_drop_the_attributes(tmp_path):
    async def body(top, graph):
        fh, gfid = await create_file(top, b"f")
        assert (await top.fstat(fh)).size == 0
        await top.write(fh, 0, b"12345")
        assert (await top.fstat(fh)).size == 5
        assert (await top.stat(gfid)).size == 5
        await top.setattr(gfid, SetAttr(mode=0o600))
        assert stat.S_IMODE((await top.stat(gfid)).mode) == 0o600
        await top.setattr(gfid, SetAttr(size=2), fh)
        assert (await top.lookup(ROOT, b"f"))[0].size == 2
        await top.release(fh)

    md_stack(tmp_path, body, **{"md-cache-timeout": "600"})


def test_unlink_and_rename_drop_names_and_attributes(tmp_path):
    async def body(top, graph):
        fh, gfid = await create_file(top, b"a")
        await top.release(fh)
        await top.lookup(ROOT, b"a")
        await top.rename(ROOT, b"a", ROOT, b"b")
        await raises_errno(errno.ENOENT, top.lookup(ROOT, b"a"))
        assert (await top.lookup(ROOT, b"b"))[0].gfid == gfid

        await top.link(gfid, ROOT, b"c")
        assert (await top.stat(gfid)).nlink == 2
        await top.unlink(ROOT, b"c")  # a name md-cache never looked up
        assert (await top.stat(gfid)).nlink == 1
        await top.unlink(ROOT, b"b")
        await raises_errno(errno.ENOENT, top.lookup(ROOT, b"b"))

    md_stack(tmp_path, body, **{"md-cache-timeout": "600"})


def test_a_rename_over_a_name_unknown_drops_everything_but_not_over_a_missing_one(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"tmp")
        await top.release(fh)
        other, other_gfid = await create_file(top, b"other")
        await top.release(other)
        await top.stat(other_gfid)
        await raises_errno(errno.ENOENT, top.lookup(ROOT, b"new"))
        await top.rename(ROOT, b"tmp", ROOT, b"new")
        stats = errors.count("stat")
        await top.stat(other_gfid)
        assert errors.count("stat") == stats  # still cached
        (tmp_path / "unseen").write_bytes(b"")
        await top.rename(ROOT, b"new", ROOT, b"unseen")
        await top.stat(other_gfid)
        assert errors.count("stat") == stats + 1  # dropped: "unseen" could have been anything

    md_stack(tmp_path, body, **{"md-cache-timeout": "600"})


def test_entry_fops_drop_the_parent_directory(tmp_path):
    async def body(top, graph):
        nlink = (await top.stat(ROOT)).nlink
        await top.mkdir(ROOT, b"d", 0o755, 0, 0, os.urandom(16))
        assert (await top.stat(ROOT)).nlink == nlink + 1

    md_stack(tmp_path, body, **{"md-cache-timeout": "600"})


def test_an_answer_fetched_across_a_write_is_not_cached(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        gate = errors.gates["stat"] = trio.Event()
        answers = []

        async def slow_stat():
            answers.append(await top.stat(gfid))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_stat)
            await wait_for(lambda: errors.count("stat") == 1, 5)
            await top.write(fh, 0, b"new data")  # lands while the stat is in flight
            del errors.gates["stat"]
            gate.set()
        # The stat saw the file before the write; that answer must not be kept.
        assert answers[0].size == 0
        assert (await top.stat(gfid)).size == 8
        assert errors.count("stat") == 2
        await top.release(fh)

    md_stack(tmp_path, body, **{"md-cache-timeout": "600"})


def test_readdir_fills_the_cache(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        await top.release(fh)
        dh = await top.opendir(ROOT)
        names = [e.name for e in await top.readdir(dh, 0, 100)]
        await top.releasedir(dh)
        assert b"f" in names
        assert (await top.lookup(ROOT, b"f"))[0].gfid == gfid
        assert errors.count("lookup") == 0 and errors.count("stat") == 0

    md_stack(tmp_path, body, **{"md-cache-timeout": "600"})


def test_timeout_zero_caches_nothing(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        await top.stat(gfid)
        await top.stat(gfid)
        assert errors.count("stat") == 2
        await top.release(fh)

    md_stack(tmp_path, body, **{"md-cache-timeout": "0"})


def test_cached_selinux_label_absence_and_its_invalidation(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        await raises_errno(errno.ENODATA, top.getxattr(gfid, "security.selinux"))
        await raises_errno(errno.ENODATA, top.getxattr(gfid, "security.selinux"))
        assert errors.count("getxattr") == 1
        await top.setxattr(gfid, "security.selinux", b"system_u:object_r:tmp_t:s0")
        assert await top.getxattr(gfid, "security.selinux") == b"system_u:object_r:tmp_t:s0"
        await raises_errno(errno.ENODATA, top.getxattr(gfid, "user.other"))
        await raises_errno(errno.ENODATA, top.getxattr(gfid, "user.other"))
        assert errors.count("getxattr") == 4  # only the chosen names are cached
        await top.release(fh)

    md_stack(tmp_path, body, **{"md-cache-timeout": "600", "cache-selinux": "on"})


def test_capabilities_are_cached_by_default_and_dropped_by_a_write(tmp_path):
    async def body(top, graph):
        errors = graph.translators["errors"]
        fh, gfid = await create_file(top, b"f")
        for _ in range(3):
            await raises_errno(errno.ENODATA, top.getxattr(gfid, "security.capability"))
        assert errors.count("getxattr") == 1
        await top.write(fh, 0, b"x")
        await raises_errno(errno.ENODATA, top.getxattr(gfid, "security.capability"))
        assert errors.count("getxattr") == 2
        await top.release(fh)

    md_stack(tmp_path, body, **{"md-cache-timeout": "600"})


def test_stat_prefetch_is_md_cache():
    assert registered("performance/stat-prefetch").factory is MdCache
    assert registered(MD).find_option("md-cache-timeout").default == "1"


@pytest.mark.parametrize(
    "option, expected",
    [
        ("md-cache-timeout 601", "above the maximum"),
        ("md-cache-timeout soon", "expects integer"),
        ("cache-posix-acl perhaps", "expects boolean"),
        ("negative-timeout 1", "unknown option 'negative-timeout'"),
    ],
)
def test_bad_options_are_refused(option, expected):
    text = stack_volfile("/srv/b", (MD, dict([option.split(" ", 1)])))
    problems = check_errors(text)
    assert len(problems) == 1 and expected in problems[0]
