"""POSIX behaviour of a real mount: one glusterpyd brick on 127.0.0.1, one FUSE mount of it.

Each test uses the `volume` fixture (tests/conftest.py): a brick daemon and a `glusterpy mount
--foreground` process, both stopped in teardown. Where it matters, the brick directory is read
directly to check that what the mount reports is what is on disk.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from glusterpy.fuse import module as fuse_module
from glusterpy.xlator import gfid_to_ino
from tests.support.mounts import wait_until

pytestmark = pytest.mark.integration
ALL_BINDINGS = True

MiB = 1 << 20
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def test_create_write_read(volume):
    path = volume.path / "hello.txt"
    path.write_bytes(b"hello, world\n")
    assert path.read_bytes() == b"hello, world\n"
    assert path.stat().st_size == 13
    assert (volume.brick.directory / "hello.txt").read_bytes() == b"hello, world\n"


def test_the_mount_log_names_the_loaded_fuse_module(volume):
    assert fuse_module.loaded().describe() in volume.log_file.read_text()


def test_append(volume):
    path = volume.path / "log"
    for line in (b"one\n", b"two\n", b"three\n"):
        with open(path, "ab") as f:
            f.write(line)
    assert path.read_bytes() == b"one\ntwo\nthree\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"four\n")
    finally:
        os.close(fd)
    assert path.read_bytes().endswith(b"three\nfour\n")


def test_truncate(volume):
    path = volume.path / "t"
    path.write_bytes(b"0123456789")
    os.truncate(path, 4)
    assert path.read_bytes() == b"0123"
    os.truncate(path, 8)
    assert path.read_bytes() == b"0123\0\0\0\0"
    with open(path, "r+b") as f:
        f.truncate(2)
    assert path.read_bytes() == b"01"
    with open(path, "wb") as f:  # O_TRUNC on open
        f.write(b"x")
    assert path.read_bytes() == b"x"


def test_rename_and_rename_over_existing(volume):
    a, b = volume.path / "a", volume.path / "b"
    a.write_bytes(b"from a")
    b.write_bytes(b"from b")
    ino_a = a.stat().st_ino
    os.rename(a, volume.path / "a2")
    assert not a.exists() and (volume.path / "a2").stat().st_ino == ino_a
    os.rename(volume.path / "a2", b)
    assert b.read_bytes() == b"from a" and b.stat().st_ino == ino_a
    assert sorted(os.listdir(volume.path)) == ["b"]
    (volume.path / "d").mkdir()
    os.rename(b, volume.path / "d" / "b")
    assert (volume.path / "d" / "b").read_bytes() == b"from a"
    assert (volume.brick.directory / "d" / "b").read_bytes() == b"from a"


def _renameat2(old: Path, new: Path, flags: int) -> int:
    """renameat2(2) through libc; returns 0 or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    result = libc.renameat2(at_fdcwd, bytes(old), at_fdcwd, bytes(new), flags)
    return 0 if result == 0 else ctypes.get_errno()


def test_rename_noreplace_and_exchange(volume):
    a, b = volume.path / "a", volume.path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    assert _renameat2(a, b, RENAME_NOREPLACE) == errno.EEXIST
    assert b.read_bytes() == b"b"
    assert _renameat2(a, volume.path / "c", RENAME_NOREPLACE) == 0
    assert sorted(os.listdir(volume.path)) == ["b", "c"]
    # Exchanging two names has no fop behind it: refused, and nothing changes.
    assert _renameat2(b, volume.path / "c", RENAME_EXCHANGE) == errno.EINVAL
    assert (b.read_bytes(), (volume.path / "c").read_bytes()) == (b"b", b"a")


def test_hard_link(volume):
    a = volume.path / "a"
    a.write_bytes(b"shared")
    os.link(a, volume.path / "b")
    sa, sb = a.stat(), (volume.path / "b").stat()
    assert sa.st_ino == sb.st_ino and sb.st_nlink == 2
    with open(volume.path / "b", "ab") as f:
        f.write(b" data")
    assert a.read_bytes() == b"shared data"
    a.unlink()
    assert (volume.path / "b").stat().st_nlink == 1


def test_symlink_and_readlink(volume):
    (volume.path / "target").write_bytes(b"pointed at")
    os.symlink("target", volume.path / "link")
    assert os.readlink(volume.path / "link") == "target"
    assert stat.S_ISLNK(os.lstat(volume.path / "link").st_mode)
    assert (volume.path / "link").read_bytes() == b"pointed at"
    os.symlink("/nowhere/at/all", volume.path / "dangling")
    assert os.readlink(volume.path / "dangling") == "/nowhere/at/all"


def test_mkdir_and_rmdir(volume):
    nested = volume.path / "a" / "b" / "c"
    nested.mkdir(parents=True)
    (nested / "f").write_bytes(b"")
    assert (volume.path / "a").stat().st_nlink >= 3
    with pytest.raises(OSError) as info:
        os.rmdir(volume.path / "a" / "b")
    assert info.value.errno == errno.ENOTEMPTY
    (nested / "f").unlink()
    os.rmdir(nested)
    os.rmdir(volume.path / "a" / "b")
    assert os.listdir(volume.path / "a") == []
    with pytest.raises(FileExistsError):
        (volume.path / "a").mkdir()


def test_chmod_chown_utimes(volume):
    path = volume.path / "f"
    path.write_bytes(b"")
    os.chmod(path, 0o4751)
    assert stat.S_IMODE(path.stat().st_mode) == 0o4751
    os.chown(path, 1234, 5678)
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    on_disk = os.stat(volume.brick.directory / "f")
    assert (on_disk.st_uid, on_disk.st_gid) == (1234, 5678)
    os.utime(path, ns=(1_000_000_123, 2_000_000_456))
    st = path.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    (volume.path / "d").mkdir(mode=0o700)
    os.chmod(volume.path / "d", 0o1777)
    assert stat.S_IMODE((volume.path / "d").stat().st_mode) == 0o1777


def test_set_group_id_spool_directory(volume):
    spool = volume.path / "mail"
    spool.mkdir()
    os.chown(spool, 0, 8)
    os.chmod(spool, 0o2775)
    (spool / "alice").write_bytes(b"From someone\n")
    (spool / "sub").mkdir()
    assert (spool / "alice").stat().st_gid == 8
    assert os.stat(volume.brick.directory / "mail" / "alice").st_gid == 8
    sub = (spool / "sub").stat()
    assert sub.st_gid == 8 and sub.st_mode & stat.S_ISGID


def test_set_user_id_bit_dropped_when_a_user_changes_the_program(volume):
    path = volume.path / "tool"
    path.write_bytes(b"#!/bin/sh\necho harmless\n")
    os.chown(path, 65534, 65534)
    os.chmod(path, 0o4755)
    results = as_nobody(
        volume.path,
        "print(attempt(lambda: os.write(os.open('tool', os.O_WRONLY | os.O_APPEND, dir_fd=root),"
        " b'x')))\n",
    )
    assert results == ["allowed"]
    assert stat.S_IMODE(os.stat(volume.brick.directory / "tool").st_mode) == 0o755
    wait_until(lambda: stat.S_IMODE(path.stat().st_mode) == 0o755, 10, "the mode in the mount")


def test_user_xattrs(volume):
    path = volume.path / "f"
    path.write_bytes(b"")
    os.setxattr(path, "user.colour", b"blue")
    os.setxattr(path, "user.empty", b"")
    assert os.getxattr(path, "user.colour") == b"blue"
    assert sorted(os.listxattr(path)) == ["user.colour", "user.empty"]
    with pytest.raises(FileExistsError):
        os.setxattr(path, "user.colour", b"red", os.XATTR_CREATE)
    os.setxattr(path, "user.colour", b"red", os.XATTR_REPLACE)
    assert os.getxattr(path, "user.colour") == b"red"
    os.removexattr(path, "user.colour")
    with pytest.raises(OSError) as info:
        os.getxattr(path, "user.colour")
    assert info.value.errno == errno.ENODATA
    assert os.getxattr(volume.brick.directory / "f", "user.empty") == b""


def test_internal_xattrs_are_hidden_and_protected(volume):
    path = volume.path / "f"
    path.write_bytes(b"")
    assert "trusted.gfid" not in os.listxattr(path)
    with pytest.raises(OSError) as info:
        os.getxattr(path, "trusted.gfid")
    assert info.value.errno == errno.ENODATA
    gfid = os.getxattr(volume.brick.directory / "f", "trusted.gfid")
    with pytest.raises(PermissionError):
        os.setxattr(path, "trusted.gfid", uuid.uuid4().bytes)
    with pytest.raises(PermissionError):
        os.removexattr(path, "trusted.gfid")
    assert os.getxattr(volume.brick.directory / "f", "trusted.gfid") == gfid


def test_inode_numbers_come_from_gfids_and_are_stable(volume):
    path = volume.path / "f"
    path.write_bytes(b"")
    gfid = os.getxattr(volume.brick.directory / "f", "trusted.gfid")
    assert path.stat().st_ino == gfid_to_ino(gfid)
    os.rename(path, volume.path / "g")
    assert (volume.path / "g").stat().st_ino == gfid_to_ino(gfid)
    assert volume.path.stat().st_ino == 1


def test_statfs(volume):
    mounted = os.statvfs(volume.path)
    brick = os.statvfs(volume.brick.directory)
    assert mounted.f_bsize > 0 and mounted.f_namemax >= 255
    assert mounted.f_blocks * mounted.f_frsize == brick.f_blocks * brick.f_frsize


def test_readdir_lists_names_once(volume):
    names = {f"entry-{i}" for i in range(50)} | {"sub"}
    for name in names - {"sub"}:
        (volume.path / name).write_bytes(b"")
    (volume.path / "sub").mkdir()
    assert sorted(os.listdir(volume.path)) == sorted(names)
    with os.scandir(volume.path) as entries:
        kinds = {e.name: e.is_dir(follow_symlinks=False) for e in entries}
    assert kinds["sub"] is True and kinds["entry-0"] is False
    assert ".glusterfs" not in kinds


def test_fifo_and_socket_nodes(volume):
    os.mkfifo(volume.path / "fifo", 0o600)
    assert stat.S_ISFIFO(os.lstat(volume.path / "fifo").st_mode)
    os.mknod(volume.path / "sock", stat.S_IFSOCK | 0o600)
    assert stat.S_ISSOCK(os.lstat(volume.path / "sock").st_mode)


def test_fsync_puts_data_on_the_brick(volume):
    fd = os.open(volume.path / "durable", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"on disk")
        os.fsync(fd)
        assert (volume.brick.directory / "durable").read_bytes() == b"on disk"
    finally:
        os.close(fd)


def test_unlinked_open_file_still_readable(volume):
    path = volume.path / "doomed"
    path.write_bytes(b"x" * 10000)
    with open(path, "r+b") as f:
        path.unlink()
        assert not path.exists()
        f.seek(0)
        assert f.read() == b"x" * 10000
        f.write(b"more")
        f.flush()
        f.seek(10000)
        assert f.read() == b"more"
        assert os.fstat(f.fileno()).st_size == 10004
    assert os.listdir(volume.path) == []


def as_nobody(root: Path, body: str) -> list[str]:
    """Run Python `body` as uid/gid 65534, with the mount's root open as directory fd `root`.

    The fd is opened before dropping privileges, so the directories above the mount point
    (pytest's private temporary tree) need not be searchable by that user.
    """
    code = (
        "import os, sys\n"
        "root = os.open(sys.argv[1], os.O_PATH | os.O_DIRECTORY)\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "def attempt(action):\n"
        "    try:\n"
        "        action()\n"
        "        return 'allowed'\n"
        "    except PermissionError:\n"
        "        return 'denied'\n" + body
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_permissions_are_enforced_for_other_users(volume):
    (volume.path / "secret").write_bytes(b"root only")
    os.chmod(volume.path / "secret", 0o600)
    (volume.path / "public").write_bytes(b"anyone")
    os.chmod(volume.path / "public", 0o644)
    (volume.path / "shared").mkdir(mode=0o755)
    (volume.path / "open").mkdir(mode=0o777)
    os.chmod(volume.path / "open", 0o777)
    results = as_nobody(
        volume.path,
        "print(attempt(lambda: os.read(os.open('secret', os.O_RDONLY, dir_fd=root), 9)))\n"
        "print(attempt(lambda: os.open('shared/new', os.O_CREAT | os.O_WRONLY, dir_fd=root)))\n"
        "print(attempt(lambda: os.open('public', os.O_WRONLY, dir_fd=root)))\n"
        "print(attempt(lambda: os.read(os.open('public', os.O_RDONLY, dir_fd=root), 9)))\n"
        "print(attempt(lambda: os.open('open/mine', os.O_CREAT | os.O_WRONLY, dir_fd=root)))\n",
    )
    assert results == ["denied", "denied", "denied", "allowed", "allowed"]
    assert os.listdir(volume.path / "shared") == []
    assert (volume.path / "open" / "mine").stat().st_uid == 65534


def test_200_mb_file_checksum(volume):
    path = volume.path / "big"
    written = hashlib.sha256()
    block = bytearray(os.urandom(MiB))
    with open(path, "wb") as f:
        for i in range(200):
            block[:4] = i.to_bytes(4, "big")
            written.update(block)
            f.write(block)
    assert path.stat().st_size == 200 * MiB
    assert _sha256(path) == written.hexdigest()
    assert _sha256(volume.brick.directory / "big") == written.hexdigest()


def test_ten_thousand_files_in_one_directory(volume):
    directory = volume.path / "many"
    directory.mkdir()
    names = {f"msg-{i:05d}" for i in range(10_000)}
    # mknod costs two requests per file where open+close costs four; a few threads keep the
    # mount and the brick busy while each waits for its reply.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: os.mknod(directory / name, stat.S_IFREG | 0o644), names))
    listed = os.listdir(directory)
    assert len(listed) == len(names) and set(listed) == names
    assert set(os.listdir(volume.brick.directory / "many")) == names


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()
