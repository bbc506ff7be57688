"""Unit tests of storage/posix on a temporary brick directory (tmp_path on the local disk).

They cover every fop, the gfid handle tree, unlinked-but-open files, rename flags, readdir
cookies, xattrop arithmetic and atomicity, and that no request reaches outside the brick.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from glusterpy.volfile import registry
from glusterpy.xlator import CONTENT_KEY, ROOT_GFID, Event, SetAttr, Translator, blocking_calls_in
from glusterpy.xlators.storage.posix import Posix

ROOT = ROOT_GFID
TIMEOUT = 20


def new_gfid() -> bytes:
    return uuid.uuid4().bytes


def posix_options(directory: str, **extra: Any) -> dict[str, Any]:
    options = {
        "directory": directory,
        "o-direct": False,
        "export-statfs-size": True,
        "mandate-attribute": True,
        "background-unlink": False,
        "span-devices": 0,
    }
    options.update(extra)
    return options


def run_brick(directory, body: Callable[[Posix], Awaitable[Any]], **options: Any) -> Any:
    """Start a posix brick on `directory`, run `body(posix)` under a timeout, stop it."""
    posix = Posix("posix", [], posix_options(str(directory), **options))

    async def main() -> Any:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await posix.start(nursery)
                try:
                    return await body(posix)
                finally:
                    await posix.stop()

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def raises_errno(err: int, awaitable: Awaitable[Any]) -> None:
    with pytest.raises(OSError) as info:
        await awaitable
    assert info.value.errno == err, f"expected {errno.errorcode[err]}, got {info.value!r}"


def handle_path(brick, gfid: bytes) -> str:
    return os.path.join(
        str(brick), ".glusterfs", f"{gfid[0]:02x}", f"{gfid[1]:02x}", str(uuid.UUID(bytes=gfid))
    )


def gfid_xattr(path) -> bytes:
    return os.getxattr(str(path), "trusted.gfid", follow_symlinks=False)


# --- start ------------------------------------------------------------------------------------


def test_start_sets_root_gfid_and_handle_tree(tmp_path):
    async def body(p):
        iatt = await p.stat(ROOT)
        assert iatt.ino == 1
        assert stat.S_ISDIR(iatt.mode)

    run_brick(tmp_path, body)
    assert gfid_xattr(tmp_path) == ROOT
    assert os.readlink(handle_path(tmp_path, ROOT)) == "../../.."


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_start_refuses_a_bad_directory(tmp_path, kind):
    target = tmp_path / "brick"
    if kind == "file":
        target.write_bytes(b"")
    with pytest.raises(ValueError, match=str(target)):
        run_brick(target, lambda p: trio.sleep(0))


def test_start_refuses_a_subdirectory_of_another_brick(tmp_path):
    os.setxattr(str(tmp_path), "trusted.gfid", new_gfid())
    with pytest.raises(ValueError, match="root gfid"):
        run_brick(tmp_path, lambda p: trio.sleep(0))


def test_options_are_registered():
    kind = registry.get("storage/posix")
    assert kind.factory is Posix
    assert kind.find_option("directory").required
    for key in ("o-direct", "export-statfs-size", "mandate-attribute", "span-devices"):
        assert kind.find_option(key) is not None


# --- files ------------------------------------------------------------------------------------


def test_create_write_read_and_owner(tmp_path):
    gfid = new_gfid()

    async def body(p):
        fh, iatt = await p.create(ROOT, b"f", os.O_RDWR, 0o640, 1234, 5678, gfid)
        assert iatt.gfid == gfid and iatt.nlink == 1 and iatt.uid == 1234 and iatt.gid == 5678
        assert stat.S_IMODE(iatt.mode) == 0o640 and stat.S_ISREG(iatt.mode)
        assert await p.write(fh, 0, b"hello world") == 11
        assert await p.read(fh, 6, 100) == b"world"
        assert (await p.fstat(fh)).size == 11
        await p.flush(fh, b"owner")
        await p.fsync(fh, True)
        await p.fsync(fh, False)
        await p.release(fh)
        found, extra = await p.lookup(ROOT, b"f")
        assert found.gfid == gfid and found.size == 11 and extra == {}
        await raises_errno(errno.EEXIST, p.create(ROOT, b"f", os.O_RDWR, 0o644, 0, 0, new_gfid()))
        fh = await p.open(gfid, os.O_RDONLY)
        assert await p.read(fh, 0, 5) == b"hello"
        await p.release(fh)

    run_brick(tmp_path, body)
    assert (tmp_path / "f").read_bytes() == b"hello world"
    assert gfid_xattr(tmp_path / "f") == gfid
    assert os.stat(handle_path(tmp_path, gfid)).st_ino == os.stat(tmp_path / "f").st_ino
    assert os.stat(tmp_path / "f").st_nlink == 2


def test_create_refuses_a_gfid_in_use(tmp_path):
    gfid = new_gfid()

    async def body(p):
        await p.mkdir(ROOT, b"d", 0o755, 0, 0, gfid)
        await raises_errno(errno.EEXIST, p.create(ROOT, b"f", os.O_RDWR, 0o644, 0, 0, gfid))
        await raises_errno(errno.EEXIST, p.mkdir(ROOT, b"e", 0o755, 0, 0, ROOT))
        await raises_errno(errno.ENOENT, p.lookup(ROOT, b"f"))

    run_brick(tmp_path, body)


def test_append_writes_at_the_end(tmp_path):
    async def body(p):
        gfid = new_gfid()
        fh, _ = await p.create(ROOT, b"log", os.O_WRONLY, 0o644, 0, 0, gfid)
        await p.write(fh, 0, b"one\n")
        await p.release(fh)
        fh = await p.open(gfid, os.O_WRONLY | os.O_APPEND)
        await p.write(fh, 0, b"two\n")
        await p.release(fh)

    run_brick(tmp_path, body)
    assert (tmp_path / "log").read_bytes() == b"one\ntwo\n"


def test_open_never_creates_and_truncates_on_request(tmp_path):
    async def body(p):
        gfid = new_gfid()
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, gfid)
        await p.write(fh, 0, b"data")
        await p.release(fh)
        fh = await p.open(gfid, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_EXCL)
        assert (await p.fstat(fh)).size == 0
        await p.release(fh)
        await raises_errno(errno.ENOENT, p.open(new_gfid(), os.O_RDONLY))

    run_brick(tmp_path, body)


def test_unknown_handles_are_ebadf(tmp_path):
    async def body(p):
        await raises_errno(errno.EBADF, p.read(99, 0, 1))
        fh, _ = await p.create(ROOT, b"f", os.O_RDWR, 0o644, 0, 0, new_gfid())
        await raises_errno(errno.EINVAL, p.read(fh, 0, 1 << 40))
        await raises_errno(errno.EINVAL, p.read(fh, -1, 1))
        await raises_errno(errno.EINVAL, p.write(fh, -1, b"x"))
        await p.release(fh)
        await raises_errno(errno.EBADF, p.write(99, 0, b"x"))
        await raises_errno(errno.EBADF, p.fstat(99))
        await raises_errno(errno.EBADF, p.flush(99, b""))
        await raises_errno(errno.EBADF, p.release(99))
        await raises_errno(errno.EBADF, p.readdir(99, 0, 10))
        await raises_errno(errno.EBADF, p.releasedir(99))
        dh = await p.opendir(ROOT)
        await raises_errno(errno.EBADF, p.read(dh, 0, 1))
        await p.releasedir(dh)
        await raises_errno(errno.EBADF, p.readdir(dh, 0, 10))

    run_brick(tmp_path, body)


def test_setattr_mode_owner_size_times(tmp_path):
    async def body(p):
        gfid = new_gfid()
        fh, _ = await p.create(ROOT, b"f", os.O_RDWR, 0o644, 0, 0, gfid)
        await p.write(fh, 0, b"0123456789")
        iatt = await p.setattr(gfid, SetAttr(mode=0o4711, uid=7, gid=8))
        assert stat.S_IMODE(iatt.mode) == 0o4711 and (iatt.uid, iatt.gid) == (7, 8)
        iatt = await p.setattr(gfid, SetAttr(size=4))
        assert iatt.size == 4
        iatt = await p.setattr(gfid, SetAttr(size=2), fh)
        assert iatt.size == 2
        iatt = await p.setattr(gfid, SetAttr(atime_ns=10**9, mtime_ns=2 * 10**9 + 5))
        assert (iatt.atime_ns, iatt.mtime_ns) == (10**9, 2 * 10**9 + 5)
        iatt = await p.setattr(gfid, SetAttr(mtime_ns=3 * 10**9))
        assert (iatt.atime_ns, iatt.mtime_ns) == (10**9, 3 * 10**9)
        await p.release(fh)
        dgfid = new_gfid()
        await p.mkdir(ROOT, b"d", 0o755, 0, 0, dgfid)
        await raises_errno(errno.EISDIR, p.setattr(dgfid, SetAttr(size=0)))
        iatt = await p.setattr(dgfid, SetAttr(mode=0o700, uid=3))
        assert stat.S_IMODE(iatt.mode) == 0o700 and iatt.uid == 3

    run_brick(tmp_path, body)
    assert (tmp_path / "f").read_bytes() == b"01"


def test_unlinked_but_open_file_keeps_its_data(tmp_path):
    gfid = new_gfid()

    async def body(p):
        fh, _ = await p.create(ROOT, b"f", os.O_RDWR, 0o644, 0, 0, gfid)
        await p.write(fh, 0, b"before")
        await p.unlink(ROOT, b"f")
        assert not os.path.lexists(handle_path(tmp_path, gfid))
        await p.write(fh, 6, b"-after")
        assert await p.read(fh, 0, 100) == b"before-after"
        assert (await p.fstat(fh)).nlink == 0
        await raises_errno(errno.ENOENT, p.stat(gfid))
        await raises_errno(errno.ENOENT, p.lookup(ROOT, b"f"))
        await p.release(fh)

    run_brick(tmp_path, body)
    assert os.listdir(tmp_path) == [".glusterfs"]


# --- the handle tree --------------------------------------------------------------------------


def test_gfids_resolve_after_renaming_a_parent_directory(tmp_path):
    a, b, f = new_gfid(), new_gfid(), new_gfid()

    async def body(p):
        await p.mkdir(ROOT, b"a", 0o755, 0, 0, a)
        await p.mkdir(a, b"b", 0o755, 0, 0, b)
        fh, _ = await p.create(b, b"f", os.O_WRONLY, 0o644, 0, 0, f)
        await p.release(fh)
        assert (await p.stat(b)).gfid == b
        await p.rename(ROOT, b"a", ROOT, b"renamed")
        assert (await p.stat(a)).gfid == a
        assert (await p.stat(b)).gfid == b
        assert (await p.lookup(b, b"f"))[0].gfid == f
        await p.rename(a, b"b", ROOT, b"b2")
        assert (await p.stat(b)).gfid == b
        fh, _ = await p.create(b, b"g", os.O_WRONLY, 0o644, 0, 0, new_gfid())
        await p.release(fh)

    run_brick(tmp_path, body)
    assert os.readlink(handle_path(tmp_path, a)).endswith(
        "/00000000-0000-0000-0000-000000000001/renamed"
    )
    assert os.readlink(handle_path(tmp_path, b)).endswith(
        "/00000000-0000-0000-0000-000000000001/b2"
    )
    assert sorted(os.listdir(tmp_path / "b2")) == ["f", "g"]


def test_gfid_resolution_survives_a_rename_behind_the_cache(tmp_path):
    a = new_gfid()

    async def body(p):
        await p.mkdir(ROOT, b"a", 0o755, 0, 0, a)
        await p.stat(a)
        os.rename(tmp_path / "a", tmp_path / "moved")
        os.unlink(handle_path(tmp_path, a))
        os.symlink(
            "../../00/00/00000000-0000-0000-0000-000000000001/moved", handle_path(tmp_path, a)
        )
        assert (await p.stat(a)).gfid == a

    run_brick(tmp_path, body)


def test_hard_links_share_the_gfid_and_nlink_excludes_the_handle(tmp_path):
    gfid = new_gfid()

    async def body(p):
        fh, _ = await p.create(ROOT, b"one", os.O_WRONLY, 0o644, 0, 0, gfid)
        await p.release(fh)
        d = new_gfid()
        await p.mkdir(ROOT, b"d", 0o755, 0, 0, d)
        iatt = await p.link(gfid, d, b"two")
        assert iatt.gfid == gfid and iatt.nlink == 2
        assert (await p.lookup(d, b"two"))[0].gfid == gfid
        await p.unlink(ROOT, b"one")
        assert (await p.stat(gfid)).nlink == 1
        assert os.path.exists(handle_path(tmp_path, gfid))
        await p.unlink(d, b"two")
        assert not os.path.lexists(handle_path(tmp_path, gfid))
        await raises_errno(errno.EPERM, p.link(d, ROOT, b"dirlink"))

    run_brick(tmp_path, body)


def test_objects_placed_by_hand_get_a_gfid_and_handle(tmp_path):
    (tmp_path / "manual").write_bytes(b"x")
    (tmp_path / "mdir").mkdir()
    wanted = new_gfid()

    async def body(p):
        iatt, _ = await p.lookup(ROOT, b"manual", {"gfid-req": wanted})
        assert iatt.gfid == wanted and iatt.nlink == 1
        dir_iatt, _ = await p.lookup(ROOT, b"mdir")
        assert (await p.stat(dir_iatt.gfid)).gfid == dir_iatt.gfid
        again, _ = await p.lookup(ROOT, b"manual", {"gfid-req": new_gfid()})
        assert again.gfid == wanted

    run_brick(tmp_path, body)
    assert gfid_xattr(tmp_path / "manual") == wanted


# --- entries ----------------------------------------------------------------------------------


def test_mkdir_rmdir_and_handle_symlink(tmp_path):
    d = new_gfid()

    async def body(p):
        iatt = await p.mkdir(ROOT, b"d", 0o2750, 11, 12, d)
        assert stat.S_ISDIR(iatt.mode) and stat.S_IMODE(iatt.mode) == 0o2750
        assert (iatt.uid, iatt.gid, iatt.nlink) == (11, 12, 2)
        await raises_errno(errno.EEXIST, p.mkdir(ROOT, b"d", 0o755, 0, 0, new_gfid()))
        fh, _ = await p.create(d, b"f", os.O_WRONLY, 0o644, 0, 0, new_gfid())
        await p.release(fh)
        await raises_errno(errno.ENOTEMPTY, p.rmdir(ROOT, b"d"))
        await raises_errno(errno.ENOTDIR, p.rmdir(d, b"f"))
        await raises_errno(errno.EISDIR, p.unlink(ROOT, b"d"))
        await p.unlink(d, b"f")
        await p.rmdir(ROOT, b"d")
        await raises_errno(errno.ENOENT, p.stat(d))

    run_brick(tmp_path, body)
    assert not os.path.lexists(handle_path(tmp_path, d))


def test_symlink_readlink_and_mknod(tmp_path):
    s, fifo, sock, reg, dev = (new_gfid() for _ in range(5))

    async def body(p):
        iatt = await p.symlink(ROOT, b"s", b"../../etc/passwd", 5, 6, s)
        assert stat.S_ISLNK(iatt.mode) and (iatt.uid, iatt.gid) == (5, 6) and iatt.nlink == 1
        assert await p.readlink(s) == b"../../etc/passwd"
        assert stat.S_ISFIFO((await p.mknod(ROOT, b"p", stat.S_IFIFO | 0o600, 0, 0, 0, fifo)).mode)
        assert stat.S_ISSOCK((await p.mknod(ROOT, b"k", stat.S_IFSOCK | 0o600, 0, 0, 0, sock)).mode)
        assert stat.S_ISREG((await p.mknod(ROOT, b"r", stat.S_IFREG | 0o600, 0, 0, 0, reg)).mode)
        iatt = await p.mknod(ROOT, b"null", stat.S_IFCHR | 0o666, os.makedev(1, 3), 0, 0, dev)
        assert stat.S_ISCHR(iatt.mode) and iatt.rdev == os.makedev(1, 3)
        await raises_errno(errno.EINVAL, p.readlink(fifo))
        # Device nodes and FIFOs made by clients are never opened on the server.
        await raises_errno(errno.EPERM, p.open(dev, os.O_RDONLY))
        await raises_errno(errno.EPERM, p.open(fifo, os.O_RDONLY))
        await raises_errno(errno.EISDIR, p.open(ROOT, os.O_RDONLY))
        assert (await p.lookup(ROOT, b"s"))[0].gfid == s

    run_brick(tmp_path, body)
    assert gfid_xattr(tmp_path / "s") == s


def test_rename_noreplace_and_replacing_drops_the_old_handle(tmp_path):
    a, b, c = new_gfid(), new_gfid(), new_gfid()

    async def body(p):
        for name, gfid in ((b"a", a), (b"b", b), (b"c", c)):
            fh, _ = await p.create(ROOT, name, os.O_WRONLY, 0o644, 0, 0, gfid)
            await p.write(fh, 0, name)
            await p.release(fh)
        await raises_errno(errno.EEXIST, p.rename(ROOT, b"a", ROOT, b"b", 1))
        await raises_errno(errno.EINVAL, p.rename(ROOT, b"a", ROOT, b"b", 4))
        await p.rename(ROOT, b"a", ROOT, b"b")
        assert (await p.lookup(ROOT, b"b"))[0].gfid == a
        assert not os.path.lexists(handle_path(tmp_path, b))
        await p.link(c, ROOT, b"c2")
        await p.rename(ROOT, b"b", ROOT, b"c")
        assert os.path.exists(handle_path(tmp_path, c))
        assert (await p.stat(c)).nlink == 1
        await p.rename(ROOT, b"c", ROOT, b"new", 1)
        assert (await p.lookup(ROOT, b"new"))[0].gfid == a

    run_brick(tmp_path, body)


def test_rename_directory_over_an_empty_directory(tmp_path):
    src, dst = new_gfid(), new_gfid()

    async def body(p):
        await p.mkdir(ROOT, b"src", 0o755, 0, 0, src)
        await p.mkdir(ROOT, b"dst", 0o755, 0, 0, dst)
        await p.rename(ROOT, b"src", ROOT, b"dst")
        await raises_errno(errno.ENOENT, p.stat(dst))
        assert (await p.lookup(ROOT, b"dst"))[0].gfid == src
        assert (await p.stat(src)).gfid == src

    run_brick(tmp_path, body)
    assert not os.path.lexists(handle_path(tmp_path, dst))


# --- directories ------------------------------------------------------------------------------


async def read_all(p, dh, offset=0, count=3):
    names = []
    while True:
        entries = await p.readdir(dh, offset, count)
        if not entries:
            return names
        names += [e.name for e in entries]
        offset = entries[-1].offset


def test_readdir_hides_the_handle_tree_and_returns_attributes(tmp_path):
    async def body(p):
        gfids = {}
        for i in range(7):
            gfids[b"f%d" % i] = new_gfid()
            fh, _ = await p.create(ROOT, b"f%d" % i, os.O_WRONLY, 0o644, 0, 0, gfids[b"f%d" % i])
            await p.release(fh)
        dh = await p.opendir(ROOT)
        entries = await p.readdir(dh, 0, 100)
        assert {e.name: e.iatt.gfid for e in entries} == gfids
        assert all(e.offset != 0 for e in entries)
        assert len({e.offset for e in entries}) == len(entries)
        assert sorted(await read_all(p, dh)) == sorted(gfids)
        await p.fsyncdir(dh, False)
        await p.releasedir(dh)

    run_brick(tmp_path, body)


def test_readdir_cookies_stay_valid_while_entries_change(tmp_path):
    async def body(p):
        for name in (b"a", b"b", b"c", b"d", b"e"):
            fh, _ = await p.create(ROOT, name, os.O_WRONLY, 0o644, 0, 0, new_gfid())
            await p.release(fh)
        dh = await p.opendir(ROOT)
        first = await p.readdir(dh, 0, 2)
        fh, _ = await p.create(ROOT, b"0new", os.O_WRONLY, 0o644, 0, 0, new_gfid())
        await p.release(fh)
        await p.unlink(ROOT, b"d")
        rest = await read_all(p, dh, first[-1].offset, 2)
        seen = [e.name for e in first] + rest
        assert len(seen) == len(set(seen))
        assert set(seen) == {b"a", b"b", b"c", b"e"} or set(seen) == {
            b"a",
            b"b",
            b"c",
            b"e",
            b"0new",
        }
        assert b"d" not in seen
        assert set(await read_all(p, dh)) == {b"0new", b"a", b"b", b"c", b"e"}
        await p.releasedir(dh)

    run_brick(tmp_path, body)


def test_statfs(tmp_path):
    async def body(p):
        return await p.statfs(ROOT)

    real = os.statvfs(tmp_path)
    sv = run_brick(tmp_path, body)
    assert sv.blocks == real.f_blocks and sv.namemax == real.f_namemax
    assert run_brick(tmp_path, body, **{"export-statfs-size": False}).blocks == 0


# --- extended attributes ----------------------------------------------------------------------


def test_xattrs_set_get_list_remove_and_flags(tmp_path):
    async def body(p):
        gfid = new_gfid()
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, gfid)
        await p.release(fh)
        await raises_errno(errno.ENODATA, p.getxattr(gfid, "user.missing"))
        await p.setxattr(gfid, "user.a", b"1")
        await raises_errno(errno.EEXIST, p.setxattr(gfid, "user.a", b"2", os.XATTR_CREATE))
        await raises_errno(errno.ENODATA, p.setxattr(gfid, "user.b", b"2", os.XATTR_REPLACE))
        await p.setxattr(gfid, "user.a", b"3", os.XATTR_REPLACE)
        await p.setxattr(gfid, "trusted.afr.c0", bytes(12))
        assert await p.getxattr(gfid, "user.a") == b"3"
        assert {"user.a", "trusted.afr.c0", "trusted.gfid"} <= set(await p.listxattr(gfid))
        await p.removexattr(gfid, "user.a")
        await raises_errno(errno.ENODATA, p.removexattr(gfid, "user.a"))
        await raises_errno(errno.EPERM, p.setxattr(gfid, "trusted.gfid", new_gfid()))
        await raises_errno(errno.EPERM, p.removexattr(gfid, "trusted.gfid"))
        await raises_errno(errno.EPERM, p.setxattr(ROOT, "trusted.gfid", new_gfid()))
        await raises_errno(errno.EPERM, p.xattrop(gfid, "add-array", {"trusted.gfid": bytes(16)}))
        assert await p.getxattr(gfid, "trusted.gfid") == gfid
        await p.setxattr(ROOT, "trusted.glusterfs.volume-id", b"v")
        assert await p.getxattr(ROOT, "trusted.glusterfs.volume-id") == b"v"

    run_brick(tmp_path, body)


def test_lookup_returns_requested_xattrs(tmp_path):
    async def body(p):
        gfid = new_gfid()
        await p.mkdir(ROOT, b"d", 0o755, 0, 0, gfid)
        await p.setxattr(gfid, "trusted.afr.c0", b"\0\0\0\1")
        await p.setxattr(gfid, "trusted.afr.c1", b"\0\0\0\2")
        await p.setxattr(gfid, "user.other", b"x")
        _, extra = await p.lookup(ROOT, b"d", {"xattrs": "trusted.afr.", "unknown": 1})
        assert extra["xattrs"] == {"trusted.afr.c0": b"\0\0\0\1", "trusted.afr.c1": b"\0\0\0\2"}
        _, extra = await p.lookup(ROOT, b"d", {"xattrs": ["user.other", "user.missing"]})
        assert extra["xattrs"] == {"user.other": b"x"}

    run_brick(tmp_path, body)


def test_lookup_carries_the_content_of_small_regular_files_when_asked(tmp_path):
    (tmp_path / "small").write_bytes(b"a short message\n")
    (tmp_path / "big").write_bytes(b"x" * 5000)
    (tmp_path / "empty").touch()
    os.mkdir(tmp_path / "dir")
    os.symlink("small", tmp_path / "link")

    async def body(p):
        asked = {CONTENT_KEY: 4096}
        _, reply = await p.lookup(ROOT, b"small", asked)
        assert reply[CONTENT_KEY] == b"a short message\n"
        _, reply = await p.lookup(ROOT, b"small")
        assert CONTENT_KEY not in reply
        for name in (b"big", b"empty", b"dir", b"link"):
            _, reply = await p.lookup(ROOT, name, asked)
            assert CONTENT_KEY not in reply, name
        _, reply = await p.lookup(ROOT, b"small", {CONTENT_KEY: "4096"})
        assert CONTENT_KEY not in reply

    run_brick(tmp_path, body)


def be32(*values: int) -> bytes:
    return b"".join((v & 0xFFFFFFFF).to_bytes(4, "big") for v in values)


def test_xattrop_adds_big_endian_int32_arrays_with_wraparound(tmp_path):
    async def body(p):
        gfid = new_gfid()
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, gfid)
        await p.release(fh)
        new = await p.xattrop(gfid, "add-array", {"trusted.afr.c0": be32(1, 2, 3)})
        assert new == {"trusted.afr.c0": be32(1, 2, 3)}
        new = await p.xattrop(
            gfid,
            "add-array",
            {"trusted.afr.c0": be32(-1, 0x7FFFFFFF, 5), "trusted.afr.c1": be32(0)},
        )
        assert new == {"trusted.afr.c0": be32(0, 0x80000001, 8), "trusted.afr.c1": be32(0)}
        assert await p.getxattr(gfid, "trusted.afr.c0") == be32(0, 0x80000001, 8)
        await p.setxattr(gfid, "trusted.afr.c2", be32(0xFFFFFFFF))
        new = await p.xattrop(gfid, "add-array", {"trusted.afr.c2": be32(1)})
        assert new["trusted.afr.c2"] == be32(0)
        await raises_errno(errno.EINVAL, p.xattrop(gfid, "add-array", {"trusted.x": b"abc"}))
        await raises_errno(errno.EINVAL, p.xattrop(gfid, "bogus", {"trusted.x": be32(1)}))

    run_brick(tmp_path, body)


def test_xattrop_is_atomic_under_concurrent_calls_in_threads(tmp_path):
    calls = 200

    async def body(p):
        gfid = new_gfid()
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, gfid)
        await p.release(fh)

        async def add(delta):
            await p.xattrop(gfid, "add-array", {"trusted.afr.c0": be32(delta, 1)})

        with blocking_calls_in(trio.CapacityLimiter(8)):
            async with trio.open_nursery() as nursery:
                for i in range(calls):
                    nursery.start_soon(add, 1 if i % 2 else 2)
        assert await p.getxattr(gfid, "trusted.afr.c0") == be32(calls // 2 * 3, calls)
        assert p._xattrop_locks == {}

    run_brick(tmp_path, body)


# --- nothing reaches outside the brick --------------------------------------------------------

BAD_NAMES = [b"..", b".", b"", b"a/b", b"../x", b"a\0b", b"/etc"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_by_every_entry_fop(tmp_path, name):
    brick = tmp_path / "brick"
    brick.mkdir()

    async def body(p):
        f = new_gfid()
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, f)
        await p.release(fh)
        calls = [
            p.lookup(ROOT, name),
            p.create(ROOT, name, os.O_WRONLY, 0o644, 0, 0, new_gfid()),
            p.mkdir(ROOT, name, 0o755, 0, 0, new_gfid()),
            p.mknod(ROOT, name, stat.S_IFIFO | 0o644, 0, 0, 0, new_gfid()),
            p.symlink(ROOT, name, b"x", 0, 0, new_gfid()),
            p.link(f, ROOT, name),
            p.unlink(ROOT, name),
            p.rmdir(ROOT, name),
            p.rename(ROOT, b"f", ROOT, name),
            p.rename(ROOT, name, ROOT, b"g"),
        ]
        for call in calls:
            await raises_errno(errno.EINVAL, call)

    run_brick(brick, body)
    assert sorted(os.listdir(brick)) == [".glusterfs", "f"]
    assert os.listdir(tmp_path) == ["brick"]


def test_the_handle_tree_is_out_of_reach(tmp_path):
    async def body(p):
        f = new_gfid()
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, f)
        await p.release(fh)
        gfs = b".glusterfs"
        await raises_errno(errno.ENOENT, p.lookup(ROOT, gfs))
        await raises_errno(errno.EPERM, p.create(ROOT, gfs, os.O_WRONLY, 0o644, 0, 0, new_gfid()))
        await raises_errno(errno.EPERM, p.mkdir(ROOT, gfs, 0o755, 0, 0, new_gfid()))
        await raises_errno(errno.EPERM, p.symlink(ROOT, gfs, b"x", 0, 0, new_gfid()))
        await raises_errno(errno.EPERM, p.link(f, ROOT, gfs))
        await raises_errno(errno.EPERM, p.unlink(ROOT, gfs))
        await raises_errno(errno.EPERM, p.rmdir(ROOT, gfs))
        await raises_errno(errno.EPERM, p.rename(ROOT, gfs, ROOT, b"x"))
        await raises_errno(errno.EPERM, p.rename(ROOT, b"f", ROOT, gfs))
        d = new_gfid()
        await p.mkdir(ROOT, b"sub", 0o755, 0, 0, d)
        await p.mkdir(d, gfs, 0o755, 0, 0, new_gfid())
        dh = await p.opendir(ROOT)
        assert gfs not in [e.name for e in await p.readdir(dh, 0, 100)]
        await p.releasedir(dh)

    run_brick(tmp_path, body)


@pytest.fixture
def planted(tmp_path):
    """A brick with symlinks planted in it that point outside: to a directory and a file."""
    brick = tmp_path / "brick"
    outside = tmp_path / "outside"
    brick.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.chmod(outside / "secret", 0o600)
    os.symlink(outside, brick / "evil_dir")
    os.symlink(outside / "secret", brick / "evil_file")
    return brick, outside


def outside_untouched(outside):
    assert os.listdir(outside) == ["secret"]
    st = os.stat(outside / "secret")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0 and st.st_size == 6
    assert os.listxattr(outside / "secret") == [] and os.listxattr(outside) == []


def test_planted_symlinks_are_never_followed(planted):
    brick, outside = planted

    async def body(p):
        d, _ = await p.lookup(ROOT, b"evil_dir")
        f, _ = await p.lookup(ROOT, b"evil_file")
        assert stat.S_ISLNK(d.mode) and stat.S_ISLNK(f.mode)
        for parent in (d.gfid, f.gfid):
            await raises_errno(errno.ENOTDIR, p.lookup(parent, b"secret"))
            await raises_errno(
                errno.ENOTDIR, p.create(parent, b"x", os.O_WRONLY, 0o644, 0, 0, new_gfid())
            )
            await raises_errno(errno.ENOTDIR, p.mkdir(parent, b"x", 0o755, 0, 0, new_gfid()))
            await raises_errno(errno.ENOTDIR, p.opendir(parent))
            await raises_errno(errno.ENOTDIR, p.unlink(parent, b"secret"))
        await raises_errno(errno.EPERM, p.open(f.gfid, os.O_RDWR | os.O_TRUNC))
        await raises_errno(errno.EINVAL, p.setattr(f.gfid, SetAttr(size=0)))
        await raises_errno(errno.EOPNOTSUPP, p.setattr(f.gfid, SetAttr(mode=0o666)))
        await p.setattr(f.gfid, SetAttr(uid=99, atime_ns=1, mtime_ns=1))
        await p.setxattr(f.gfid, "trusted.planted", b"1")
        await p.setxattr(d.gfid, "trusted.planted", b"1")
        assert await p.readlink(f.gfid) == os.fsencode(outside / "secret")
        await raises_errno(
            errno.EEXIST, p.create(ROOT, b"evil_file", os.O_RDWR, 0o666, 0, 0, new_gfid())
        )
        await raises_errno(errno.EEXIST, p.mkdir(ROOT, b"evil_dir", 0o755, 0, 0, new_gfid()))
        await p.unlink(ROOT, b"evil_file")
        await p.rename(ROOT, b"evil_dir", ROOT, b"renamed")

    run_brick(brick, body)
    outside_untouched(outside)
    assert os.lstat(brick / "renamed").st_uid == 0
    assert os.listxattr(brick / "renamed", follow_symlinks=False) == [
        "trusted.gfid",
        "trusted.planted",
    ]


def test_a_directory_swapped_for_a_symlink_is_not_followed(planted):
    brick, outside = planted
    sub = new_gfid()

    async def body(p):
        await p.mkdir(ROOT, b"sub", 0o755, 0, 0, sub)
        await p.stat(sub)
        os.rmdir(brick / "sub")
        os.symlink(outside, brick / "sub")
        await raises_errno(errno.ENOTDIR, p.stat(sub))
        await raises_errno(errno.ENOTDIR, p.create(sub, b"x", os.O_WRONLY, 0o644, 0, 0, new_gfid()))
        await raises_errno(errno.ENOTDIR, p.mkdir(sub, b"x", 0o755, 0, 0, new_gfid()))
        await raises_errno(errno.ENOTDIR, p.setxattr(sub, "trusted.x", b"1"))
        await raises_errno(errno.ENOTDIR, p.setattr(sub, SetAttr(mode=0o777)))

    run_brick(brick, body)
    outside_untouched(outside)


def test_forged_handles_are_not_followed(planted):
    brick, outside = planted
    d, f = new_gfid(), new_gfid()

    async def make(p):
        await p.mkdir(ROOT, b"d", 0o755, 0, 0, d)
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, f)
        await p.release(fh)

    async def attack(p):
        for gfid in (d, f):
            await raises_errno(errno.EIO, p.stat(gfid))
            await raises_errno(errno.EIO, p.open(gfid, os.O_RDWR))
            await raises_errno(errno.EIO, p.setattr(gfid, SetAttr(mode=0o777, size=0)))
            await raises_errno(errno.EIO, p.setxattr(gfid, "trusted.x", b"1"))
        await raises_errno(errno.EIO, p.mkdir(d, b"x", 0o755, 0, 0, new_gfid()))

    run_brick(brick, make)
    handle_dir = os.path.dirname(handle_path(brick, d))
    os.unlink(handle_path(brick, d))
    os.symlink(os.path.relpath(outside, handle_dir), handle_path(brick, d))
    os.unlink(handle_path(brick, f))
    os.symlink(outside / "secret", handle_path(brick, f))
    run_brick(brick, attack)
    outside_untouched(outside)


def test_a_requested_gfid_already_in_use_is_not_reused(tmp_path):
    f = new_gfid()

    async def body(p):
        fh, _ = await p.create(ROOT, b"f", os.O_WRONLY, 0o644, 0, 0, f)
        await p.release(fh)
        for name, taken in ((b"manual1", ROOT), (b"manual2", f)):
            os.mkdir(tmp_path / name.decode())
            iatt, _ = await p.lookup(ROOT, name, {"gfid-req": taken})
            assert iatt.gfid not in (ROOT, f)
        assert (await p.stat(f)).gfid == f
        assert (await p.stat(ROOT)).ino == 1

    run_brick(tmp_path, body)


def test_setattr_through_a_directory_handle(tmp_path):
    async def body(p):
        d = new_gfid()
        await p.mkdir(ROOT, b"d", 0o755, 0, 0, d)
        dh = await p.opendir(d)
        iatt = await p.setattr(d, SetAttr(mode=0o711), dh)
        assert stat.S_IMODE(iatt.mode) == 0o711
        await p.releasedir(dh)

    run_brick(tmp_path, body)


def test_start_tells_parents_the_brick_is_up(tmp_path):
    heard = []

    class Parent(Translator):
        def notify(self, event, child):
            heard.append((event, child.name))

    posix = Posix("posix", [], posix_options(str(tmp_path)))
    Parent("parent", [posix], {})

    async def main():
        await posix.start(None)
        await posix.stop()

    trio.run(main)
    assert heard == [(Event.CHILD_UP, "posix")]


def test_lookup_repairs_the_handle_of_a_directory_moved_by_hand(tmp_path):
    a = new_gfid()

    async def make(p):
        await p.mkdir(ROOT, b"a", 0o755, 0, 0, a)

    async def find(p):
        await raises_errno(errno.ENOENT, p.stat(a))
        assert (await p.lookup(ROOT, b"moved"))[0].gfid == a
        assert (await p.stat(a)).gfid == a

    run_brick(tmp_path, make)
    os.rename(tmp_path / "a", tmp_path / "moved")
    run_brick(tmp_path, find)
    assert os.readlink(handle_path(tmp_path, a)).endswith("/moved")


def walk_brick(brick):
    """(user non-directories by inode, handle hard links by inode) of a brick on disk."""
    files, handles = {}, {}
    for top, dirs, names in os.walk(brick):
        if top == str(brick):
            dirs.remove(".glusterfs")
        for name in names:
            st = os.lstat(os.path.join(top, name))
            files[st.st_ino] = os.path.join(top, name)
    for top, _, names in os.walk(os.path.join(brick, ".glusterfs")):
        for name in names:
            st = os.lstat(os.path.join(top, name))
            if not stat.S_ISLNK(st.st_mode):
                handles[st.st_ino] = name
    return files, handles


def test_concurrent_entry_fops_in_threads_keep_the_handle_tree_exact(tmp_path):
    import random

    rng = random.Random(4)
    plan = [(rng.choice("cludr"), rng.randrange(20), rng.randrange(20)) for _ in range(400)]

    async def body(p):
        d = new_gfid()
        await p.mkdir(ROOT, b"d", 0o755, 0, 0, d)

        async def step(op, a, b):
            name_a, name_b = b"n%d" % a, b"n%d" % b
            try:
                if op == "c":
                    fh, iatt = await p.create(ROOT, name_a, os.O_WRONLY, 0o644, 0, 0, new_gfid())
                    await p.release(fh)
                elif op == "l":
                    iatt, _ = await p.lookup(ROOT, name_a)
                    await p.link(iatt.gfid, d, name_b)
                elif op == "u":
                    await p.unlink(ROOT if a % 2 else d, name_a)
                elif op == "r":
                    await p.rename(ROOT, name_a, d if b % 2 else ROOT, name_b)
                else:
                    await p.rename(d, name_a, ROOT, name_b, 1)
            except OSError as e:
                assert e.errno in (errno.ENOENT, errno.EEXIST), e

        with blocking_calls_in(trio.CapacityLimiter(4)):
            async with trio.open_nursery() as nursery:
                for op, a, b in plan:
                    nursery.start_soon(step, op, a, b)

    run_brick(tmp_path, body)
    files, handles = walk_brick(tmp_path)
    assert files, "the plan should leave some files behind"
    assert set(files) == set(handles)
    for ino, path in files.items():
        gfid = gfid_xattr(path)
        assert handles[ino] == str(uuid.UUID(bytes=gfid))
