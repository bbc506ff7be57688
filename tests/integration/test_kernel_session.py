"""The kernel session on real FUSE mounts, serving the in-memory file system of kernel_session_fs.

Every test mounts in a separate server process (never in pytest's own: touching a mount from
the process that serves it deadlocks), bounds every wait, and always unmounts lazily and kills
the server on teardown.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from kernel_session_support import (
    REPO,
    SERVER,
    Child,
    Servers,
    connection_number,
    mounted,
    wait_until,
)

pytestmark = pytest.mark.integration

MIB = 1 << 20

if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
    pytest.skip("needs /dev/fuse and root", allow_module_level=True)


@pytest.fixture
def serve(tmp_path):
    """serve(count, *args) starts a server on `count` fresh mountpoints and returns them."""
    with Servers(tmp_path) as servers:
        yield servers


def _test_value(mount: Path, name: str):
    return json.loads(os.getxattr(mount, f"user.test.{name}"))


# --- plain file system work ------------------------------------------------------------------


def test_files_directories_links_and_xattrs(serve):
    (mnt,) = serve()
    (mnt / "d").mkdir(mode=0o750)
    (mnt / "d" / "f").write_bytes(b"hello world")
    assert (mnt / "d" / "f").read_bytes() == b"hello world"
    os.symlink("d/f", mnt / "l")
    assert os.readlink(mnt / "l") == "d/f"
    assert (mnt / "l").read_bytes() == b"hello world"
    os.link(mnt / "d" / "f", mnt / "hard")
    assert os.stat(mnt / "hard").st_nlink == 2
    os.rename(mnt / "hard", mnt / "d" / "moved")
    assert sorted(os.listdir(mnt / "d")) == ["f", "moved"]
    os.truncate(mnt / "d" / "f", 5)
    assert (mnt / "d" / "f").read_bytes() == b"hello"
    os.chmod(mnt / "d" / "f", 0o600)
    assert os.stat(mnt / "d" / "f").st_mode & 0o777 == 0o600
    os.setxattr(mnt / "d" / "f", "user.colour", b"blue")
    assert os.getxattr(mnt / "d" / "f", "user.colour") == b"blue"
    assert os.listxattr(mnt / "d" / "f") == ["user.colour"]
    os.removexattr(mnt / "d" / "f", "user.colour")
    with pytest.raises(OSError) as caught:
        os.getxattr(mnt / "d" / "f", "user.colour")
    assert caught.value.errno == errno.ENODATA
    os.unlink(mnt / "d" / "moved")
    os.unlink(mnt / "d" / "f")
    os.rmdir(mnt / "d")
    assert os.statvfs(mnt).f_bsize == 4096
    assert sorted(os.listdir(mnt)) == ["l"]


def test_a_large_directory_lists_completely(serve):
    (mnt,) = serve()
    names = {f"file-with-a-longish-name-{i:04d}" for i in range(600)}
    for name in names:
        (mnt / name).touch()
    assert set(os.listdir(mnt)) == names
    assert {entry.name for entry in os.scandir(mnt) if entry.is_file()} == names


# --- INIT and request sizes ------------------------------------------------------------------


def _direct_writes(path: Path, size: int, count: int) -> None:
    buffer = mmap.mmap(-1, size)  # page aligned, as O_DIRECT wants
    buffer.write(b"x" * size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        for _ in range(count):
            assert os.write(fd, buffer) == size
    finally:
        os.close(fd)


def test_one_mib_direct_writes_arrive_as_one_mib_requests(serve):
    # The short-INIT regression: with a truncated INIT reply the kernel reads max_pages as 0
    # and splits these writes into 4 KiB requests while everything else still works.
    (mnt,) = serve()
    _direct_writes(mnt / "big", MIB, 8)
    assert _test_value(mnt, "write_sizes") == {str(MIB): 8}
    (negotiated,) = _test_value(mnt, "session")
    assert negotiated["max_write"] == MIB and negotiated["max_pages"] == 256
    assert negotiated["minor"] == 45


def test_max_write_option_caps_the_request_size(serve):
    (mnt,) = serve(1, "--max-write", str(256 * 1024))
    _direct_writes(mnt / "big", MIB, 2)
    assert _test_value(mnt, "write_sizes") == {str(256 * 1024): 8}


def test_read_ahead_is_set_after_init_and_makes_buffered_reads_large(serve):
    (mnt,) = serve(1, "--read-ahead-kb", "1024")
    device = _mount_device(mnt)
    assert Path(f"/sys/class/bdi/{device}/read_ahead_kb").read_text().strip() == "1024"
    (mnt / "data").write_bytes(bytes(8 * MIB))
    with open(mnt / "data", "rb") as f:
        while f.read(MIB):
            pass
    sizes = {int(size): count for size, count in _test_value(mnt, "read_sizes").items()}
    assert max(sizes) == MIB


def _mount_device(mnt: Path) -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(mnt):
                return fields[2]
    raise AssertionError(f"{mnt} is not mounted")


@pytest.fixture
def fusectl():
    """/sys/fs/fuse/connections, mounted for the test when it is not already."""
    connections = Path("/sys/fs/fuse/connections")
    ours = not mounted(connections)
    if ours:
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(connections)], check=True)
    yield connections
    if ours:
        subprocess.run(["umount", "-l", str(connections)], timeout=10)


def test_background_queue_limits_are_glusterfs_defaults(serve, fusectl):
    (mnt,) = serve()
    connection = fusectl / str(connection_number(mnt))
    assert (connection / "max_background").read_text().strip() == "64"
    assert (connection / "congestion_threshold").read_text().strip() == "48"


def test_mount_through_fusermount3_fd_passing(serve):
    (mnt,) = serve(1, "--fusermount")
    (mnt / "f").write_bytes(b"passed")
    assert (mnt / "f").read_bytes() == b"passed"
    with open("/proc/self/mountinfo") as f:
        assert any(str(mnt) in line and "fuse.kernelsessiontest" in line for line in f)


# --- notifications ---------------------------------------------------------------------------


def test_entry_invalidation_from_inside_a_handler_does_not_deadlock(serve):
    # 300 s timeouts: without the notification the kernel would keep the dropped name.
    (mnt,) = serve(1, "--timeout", "300")
    (mnt / "gone").write_bytes(b"x")
    assert (mnt / "gone").exists()
    child = Child(
        "import os, sys; os.setxattr(sys.argv[1], 'user.test.drop', b'gone'); print('set')",
        str(mnt),
    )
    try:
        child.expect("set", 10)
    finally:
        child.kill()
    # The notification is written once the kernel lets go of the directory, after the reply.
    wait_until(lambda: not (mnt / "gone").exists(), 10, "the name to be invalidated")


# --- the mount survives its server -----------------------------------------------------------


def test_killed_server_leaves_a_mount_that_lazy_unmount_clears(serve):
    (mnt,) = serve()
    (mnt / "f").touch()
    server = serve.procs[-1]
    server.kill()
    server.wait(timeout=10)
    with pytest.raises(OSError) as caught:
        os.listdir(mnt)
    assert caught.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    subprocess.run(["umount", "-l", str(mnt)], check=True, timeout=10)
    assert not mounted(mnt)


# --- a user's own mount, through fusermount3 ---------------------------------------------------

NOBODY = 65534


@pytest.fixture
def fuse_device_for_users():
    """/dev/fuse open to every user, as Debian's udev rule (fuse3) makes it.

    Without udev (a container, this kind of CI machine) the node is root's alone and no user
    mount can work at all; the mode found is restored afterwards.
    """
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", mode)


@pytest.fixture
def user_dir(fuse_device_for_users):
    """A directory the unprivileged user `nobody` owns (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="kernel-session-user-", dir="/tmp"))
    os.chmod(path, 0o755)
    os.chown(path, NOBODY, NOBODY)
    yield path
    subprocess.run(["umount", "-l", str(path / "mnt")], capture_output=True, timeout=10)
    shutil.rmtree(path, ignore_errors=True)


def test_an_unprivileged_user_mounts_through_fusermount3(user_dir):
    mnt = user_dir / "mnt"
    mnt.mkdir()
    os.chown(mnt, NOBODY, NOBODY)
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(user_dir))
    command = [sys.executable, str(SERVER), "--private", str(mnt)]
    with open(user_dir / "server.log", "wb") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, user=NOBODY, group=NOBODY
        )
    try:
        wait_until(lambda: mounted(mnt) or server.poll() is not None, 10, "the user's mount")
        assert server.poll() is None, (user_dir / "server.log").read_text()
        with open("/proc/self/mountinfo") as f:
            line = next(line for line in f if line.split()[4] == str(mnt))
        assert "user_id=65534" in line
        # Only the user may use a mount without allow_other; the user's client does the work.
        client = subprocess.run(
            [sys.executable, "-c", USER_CLIENT, str(mnt)],
            capture_output=True, text=True, timeout=30, user=NOBODY, group=NOBODY,
        )  # fmt: skip
        assert client.stdout.strip() == "hello from nobody", client.stderr
        # The server, not being root, unmounts with fusermount3 when it is told to stop.
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) is not None
        wait_until(lambda: not mounted(mnt), 10, "the user's mount to go")
    finally:
        server.kill()
        server.wait(timeout=10)


USER_CLIENT = """
import os, sys
path = os.path.join(sys.argv[1], "note")
with open(path, "w") as f:
    f.write("hello from nobody")
print(open(path).read())
"""
