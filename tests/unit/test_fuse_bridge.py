"""Unit tests of the FUSE bridge, driven in-process on top of a storage/posix graph.

No kernel is involved: the tests call the bridge as a binding would and check the inode table
(lookup counts, forget), handles, readdir cookies, the xattr filter and the errno mapping.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from glusterpy.fuse.bridge import ROOT_INO, Bridge, DirItem, errno_of
from glusterpy.graph import Graph
from glusterpy.volfile.parse import parse_text
from glusterpy.xlator import Flock, SetAttr, gfid_to_ino

TIMEOUT = 20


def run_bridge(directory, body: Callable[[Bridge], Awaitable[Any]]) -> Any:
    """Run `body(bridge)` on a started posix graph serving `directory`."""
    volfile = parse_text(
        f"volume posix\n  type storage/posix\n  option directory {directory}\nend-volume\n"
    )
    graph = Graph.build(volfile)

    async def main() -> Any:
        with trio.fail_after(TIMEOUT):
            async with graph.running():
                return await body(Bridge(graph.top))

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def oserror(awaitable: Awaitable[Any]) -> int:
    with pytest.raises(OSError) as info:
        await awaitable
    return info.value.errno


async def list_all(bridge: Bridge, fh: int, offset: int = 0) -> list[DirItem]:
    items: list[DirItem] = []
    while batch := await bridge.readdir(fh, offset):
        items.extend(batch)
        offset = batch[-1].offset
    return items


def test_lookup_counts_and_forget(tmp_path):
    (tmp_path / "f").write_bytes(b"x")

    async def body(bridge: Bridge) -> None:
        first = await bridge.lookup(ROOT_INO, b"f")
        second = await bridge.lookup(ROOT_INO, b"f")
        assert first.ino == second.ino == gfid_to_ino(first.attr.gfid)
        assert first.entry_timeout == first.attr_timeout == 1.0
        assert bridge.lookup_count(first.ino) == 2
        bridge.forget([(first.ino, 1)])
        assert (await bridge.getattr(first.ino)).attr.size == 1
        bridge.forget([(first.ino, 1)])
        assert bridge.lookup_count(first.ino) == 0
        assert await oserror(bridge.getattr(first.ino)) == errno.ESTALE

    run_bridge(tmp_path, body)


def test_forget_never_raises_and_keeps_the_root(tmp_path):
    async def body(bridge: Bridge) -> None:
        bridge.forget([(ROOT_INO, 100), (12345, 1), ("junk", None)])  # type: ignore[list-item]
        assert (await bridge.getattr(ROOT_INO)).attr.ino == ROOT_INO

    run_bridge(tmp_path, body)


def test_create_write_read_and_attributes(tmp_path):
    async def body(bridge: Bridge) -> None:
        opened, entry = await bridge.create(ROOT_INO, b"new", os.O_RDWR, 0o640, 1000, 1000)
        assert bridge.lookup_count(entry.ino) == 1
        assert opened.keep_cache is False and opened.direct_io is False
        assert await bridge.write(opened.fh, 0, b"hello world") == 11
        assert await bridge.read(opened.fh, 6, 100) == b"world"
        await bridge.flush(opened.fh, 42)
        await bridge.fsync(opened.fh, True)
        attr = (await bridge.getattr(entry.ino, opened.fh)).attr
        assert (attr.size, attr.uid, attr.gid) == (11, 1000, 1000)
        assert stat.S_IMODE(attr.mode) == 0o640
        await bridge.release(opened.fh)
        assert await oserror(bridge.read(opened.fh, 0, 1)) == errno.EBADF
        changed = await bridge.setattr(entry.ino, SetAttr(size=5, mode=0o600))
        assert changed.attr.size == 5 and stat.S_IMODE(changed.attr.mode) == 0o600

    run_bridge(tmp_path, body)
    assert (tmp_path / "new").read_bytes() == b"hello"


def test_entry_fops_count_and_make_new_gfids(tmp_path):
    async def body(bridge: Bridge) -> None:
        d = await bridge.mkdir(ROOT_INO, b"d", 0o755, 0, 0)
        f = await bridge.mknod(d.ino, b"fifo", stat.S_IFIFO | 0o600, 0, 0, 0)
        s = await bridge.symlink(d.ino, b"s", b"fifo", 0, 0)
        hard = await bridge.link(f.ino, ROOT_INO, b"hard")
        assert len({d.attr.gfid, f.attr.gfid, s.attr.gfid}) == 3
        assert hard.ino == f.ino and bridge.lookup_count(f.ino) == 2
        assert await bridge.readlink(s.ino) == b"fifo"
        await bridge.rename(d.ino, b"s", ROOT_INO, b"s2", 0)
        assert await oserror(bridge.rename(ROOT_INO, b"s2", d.ino, b"fifo", 1)) == errno.EEXIST
        assert await oserror(bridge.rename(ROOT_INO, b"s2", d.ino, b"x", 2)) == errno.EINVAL
        await bridge.unlink(ROOT_INO, b"s2")
        await bridge.unlink(d.ino, b"fifo")
        await bridge.rmdir(ROOT_INO, b"d")
        assert await oserror(bridge.lookup(ROOT_INO, b"d")) == errno.ENOENT

    run_bridge(tmp_path, body)
    assert sorted(os.listdir(tmp_path)) == [".glusterfs", "hard"]


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b", b"x" * 256])
def test_bad_names_are_refused(tmp_path, name):
    async def body(bridge: Bridge) -> int:
        return await oserror(bridge.mkdir(ROOT_INO, name, 0o755, 0, 0))

    expected = errno.ENAMETOOLONG if len(name) > 255 else errno.EINVAL
    assert run_bridge(tmp_path, body) == expected


def test_dot_lookups(tmp_path):
    async def body(bridge: Bridge) -> None:
        assert (await bridge.lookup(ROOT_INO, b".")).ino == ROOT_INO
        assert (await bridge.lookup(ROOT_INO, b"..")).ino == ROOT_INO
        d = await bridge.mkdir(ROOT_INO, b"d", 0o755, 0, 0)
        assert await oserror(bridge.lookup(d.ino, b"..")) == errno.ENOENT

    run_bridge(tmp_path, body)


def test_readdir_cookies_dots_and_counts(tmp_path):
    names = {f"file{i:04d}".encode() for i in range(600)}
    for name in names:
        (tmp_path / name.decode()).write_bytes(b"")

    async def body(bridge: Bridge) -> None:
        fh = await bridge.opendir(ROOT_INO)
        items = await list_all(bridge, fh)
        assert [i.name for i in items[:2]] == [b".", b".."]
        assert [i.offset for i in items[:2]] == [1, 2]
        assert not items[0].counted and not items[1].counted
        listed = [i.name for i in items[2:]]
        assert sorted(listed) == sorted(names) and len(listed) == len(names)
        offsets = [i.offset for i in items]
        assert len(set(offsets)) == len(offsets)
        # Resuming from any cookie gives exactly what followed it.
        middle = items[300]
        rest = await list_all(bridge, fh, middle.offset)
        assert [i.name for i in rest] == [i.name for i in items[301:]]
        assert [i.name for i in await list_all(bridge, fh, 1)] == [i.name for i in items[1:]]
        # Nothing is counted until the binding says the entry went out.
        entry = items[5].entry
        assert bridge.lookup_count(entry.ino) == 0
        bridge.remember(entry)
        assert bridge.lookup_count(entry.ino) == 1
        await bridge.releasedir(fh)
        assert await oserror(bridge.readdir(fh, 0)) == errno.EBADF

    run_bridge(tmp_path, body)


def test_unlinked_open_file_stays_usable(tmp_path):
    async def body(bridge: Bridge) -> None:
        opened, entry = await bridge.create(ROOT_INO, b"doomed", os.O_RDWR, 0o644, 0, 0)
        await bridge.write(opened.fh, 0, b"still here")
        await bridge.unlink(ROOT_INO, b"doomed")
        assert await bridge.read(opened.fh, 0, 100) == b"still here"
        attr = (await bridge.getattr(entry.ino)).attr
        assert attr.size == 10 and attr.nlink == 0
        await bridge.release(opened.fh)

    run_bridge(tmp_path, body)


def test_internal_xattrs_are_hidden_and_protected(tmp_path):
    (tmp_path / "f").write_bytes(b"")

    async def body(bridge: Bridge) -> None:
        ino = (await bridge.lookup(ROOT_INO, b"f")).ino
        await bridge.setxattr(ino, b"user.colour", b"blue")
        assert await bridge.getxattr(ino, b"user.colour") == b"blue"
        assert await bridge.listxattr(ino) == [b"user.colour"]
        for name in (b"trusted.gfid", b"trusted.afr.vol-client-0", b"trusted.glusterfs.x"):
            assert await oserror(bridge.setxattr(ino, name, b"x")) == errno.EPERM
            assert await oserror(bridge.removexattr(ino, name)) == errno.EPERM
            assert await oserror(bridge.getxattr(ino, name)) == errno.ENODATA
        await bridge.removexattr(ino, b"user.colour")
        assert await oserror(bridge.getxattr(ino, b"user.colour")) == errno.ENODATA

    run_bridge(tmp_path, body)
    assert len(os.getxattr(tmp_path / "f", "trusted.gfid")) == 16


def test_no_capabilities_is_remembered_for_attr_timeout(tmp_path, monkeypatch):
    """The kernel asks for security.capability before every write; absence is cached."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    caps = b"\x01\x00\x00\x02" + bytes(16)  # a VFS_CAP_REVISION_2 value with no capability
    clock = [1000.0]
    monkeypatch.setattr("glusterpy.fuse.bridge.time.monotonic", lambda: clock[0])

    async def body(bridge: Bridge) -> None:
        ino = (await bridge.lookup(ROOT_INO, b"f")).ino
        assert await oserror(bridge.getxattr(ino, b"security.capability")) == errno.ENODATA
        os.setxattr(path, "security.capability", caps)  # by another client, behind our back
        clock[0] += bridge.attr_timeout / 2
        assert await oserror(bridge.getxattr(ino, b"security.capability")) == errno.ENODATA
        clock[0] += bridge.attr_timeout
        assert await bridge.getxattr(ino, b"security.capability") == caps
        await bridge.removexattr(ino, b"security.capability")
        assert await oserror(bridge.getxattr(ino, b"security.capability")) == errno.ENODATA
        await bridge.setxattr(ino, b"security.capability", caps)  # through us: seen at once
        assert await bridge.getxattr(ino, b"security.capability") == caps

    run_bridge(tmp_path, body)


def test_a_new_file_is_known_to_have_no_capabilities(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("glusterpy.fuse.bridge.time.monotonic", lambda: clock[0])

    async def body(bridge: Bridge) -> None:
        _, entry = await bridge.create(ROOT_INO, b"new", os.O_WRONLY, 0o644, 0, 0)
        os.setxattr(tmp_path / "new", "security.capability", b"\x01\x00\x00\x02" + bytes(16))
        assert await oserror(bridge.getxattr(entry.ino, b"security.capability")) == errno.ENODATA
        clock[0] += bridge.attr_timeout
        assert len(await bridge.getxattr(entry.ino, b"security.capability")) == 20

    run_bridge(tmp_path, body)


def test_statfs_and_locks_reach_the_graph(tmp_path):
    async def body(bridge: Bridge) -> None:
        vfs = await bridge.statfs(ROOT_INO)
        assert vfs.bsize > 0 and vfs.namemax >= 255
        opened, _ = await bridge.create(ROOT_INO, b"f", os.O_RDWR, 0o644, 0, 0)
        lock = Flock(type=1, start=0, length=10, pid=1, owner=b"")
        # A graph of posix alone has no features/locks: the lk fop is not implemented there.
        assert await oserror(bridge.getlk(opened.fh, 7, lock)) in (errno.ENOSYS, errno.EOPNOTSUPP)

    run_bridge(tmp_path, body)


def test_errno_of():
    assert errno_of(OSError(errno.EACCES, "no")) == errno.EACCES
    assert errno_of(OSError("no errno")) == errno.EIO
    assert errno_of(ValueError("bug")) == errno.EIO


def test_set_group_id_directories_pass_on_their_group(tmp_path):
    async def body(bridge: Bridge) -> None:
        spool = await bridge.mkdir(ROOT_INO, b"spool", 0o775, 0, 0)
        await bridge.setattr(spool.ino, SetAttr(gid=8, mode=0o2775))
        opened, mbox = await bridge.create(spool.ino, b"mbox", os.O_WRONLY, 0o660, 1000, 1000)
        await bridge.release(opened.fh)
        sub = await bridge.mkdir(spool.ino, b"sub", 0o755, 1000, 1000)
        node = await bridge.mknod(sub.ino, b"fifo", stat.S_IFIFO | 0o600, 0, 1000, 1000)
        plain = await bridge.mkdir(ROOT_INO, b"plain", 0o755, 1000, 1000)
        assert (mbox.attr.uid, mbox.attr.gid) == (1000, 8)
        assert sub.attr.gid == 8 and sub.attr.mode & stat.S_ISGID
        assert node.attr.gid == 8
        assert plain.attr.gid == 1000 and not plain.attr.mode & stat.S_ISGID

    run_bridge(tmp_path, body)


def test_write_truncate_and_chown_drop_set_id_bits(tmp_path):
    async def body(bridge: Bridge) -> list[int]:
        modes = []
        for change in ("write", "truncate", "chown", "open-truncate"):
            opened, entry = await bridge.create(
                ROOT_INO, change.encode(), os.O_RDWR, 0o755, 1000, 1000
            )
            await bridge.setattr(entry.ino, SetAttr(mode=0o6755))
            if change == "write":
                await bridge.write(opened.fh, 0, b"patched")
            elif change == "open-truncate":
                reopened = await bridge.open(entry.ino, os.O_WRONLY | os.O_TRUNC)
                await bridge.release(reopened.fh)
            elif change == "truncate":
                await bridge.setattr(entry.ino, SetAttr(size=0), opened.fh)
            else:
                await bridge.setattr(entry.ino, SetAttr(uid=1001))
            modes.append((await bridge.getattr(entry.ino)).attr.mode)
            await bridge.release(opened.fh)
        # Set-group-ID without group execute marks mandatory locking, not privilege: kept.
        opened, entry = await bridge.create(ROOT_INO, b"lock", os.O_RDWR, 0o644, 0, 0)
        await bridge.setattr(entry.ino, SetAttr(mode=0o2644))
        await bridge.write(opened.fh, 0, b"x")
        modes.append((await bridge.getattr(entry.ino)).attr.mode)
        return modes

    *changed, kept = run_bridge(tmp_path, body)
    assert [stat.S_IMODE(mode) for mode in changed] == [0o755] * 4
    assert stat.S_IMODE(kept) == 0o2644
