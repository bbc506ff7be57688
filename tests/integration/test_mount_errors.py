"""`glusterpy mount` and `umount` as a user meets them: one clear line for each mistake, exit
status 2, no traceback; daemonizing, SIGTERM and dead mounts handled cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import bricks
from tests.support.mounts import GLUSTERPY, Mount, is_mounted, mount_entry, wait_until

pytestmark = pytest.mark.integration
ALL_BINDINGS = True

CLI_TIMEOUT = 60


def glusterpy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GLUSTERPY, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def client_vol(tmp_path) -> Path:
    """A client volfile naming a port where nothing listens."""
    return bricks.write_client_volfile(tmp_path / "client.vol", bricks.free_port(), name="far")


def mount_args(volfile: Path, mountpoint: Path, *extra: str) -> list[str]:
    return ["mount", "-f", str(volfile), str(mountpoint), "--foreground", *extra]


def test_missing_mount_point(client_vol, tmp_path):
    result = glusterpy(*mount_args(client_vol, tmp_path / "nowhere"))
    assert_user_error(result, "mount point", "nowhere", "does not exist")


def test_mount_point_not_a_directory(client_vol, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    result = glusterpy(*mount_args(client_vol, tmp_path / "file"))
    assert_user_error(result, "is not a directory")


def test_mount_point_busy(volume, tmp_path):
    result = glusterpy(*mount_args(volume.volfile, volume.path))
    assert_user_error(result, str(volume.path), "busy")


@pytest.mark.parametrize("foreground", [True, False])
def test_no_brick_reachable(client_vol, tmp_path, foreground):
    (tmp_path / "mnt").mkdir()
    args = ["mount", "-f", str(client_vol), str(tmp_path / "mnt"), "--start-timeout", "1"]
    args += ["--log-file", str(tmp_path / "mount.log")]
    result = glusterpy(*args, *(["--foreground"] if foreground else []))
    port = client_vol.read_text().split("remote-port ")[1].split()[0]
    assert_user_error(result, "no brick reachable within 1 s", f"far (brick on 127.0.0.1:{port})")
    assert not is_mounted(tmp_path / "mnt")


def test_volfile_errors(tmp_path):
    (tmp_path / "mnt").mkdir()
    result = glusterpy(*mount_args(tmp_path / "missing.vol", tmp_path / "mnt"))
    assert_user_error(result, "missing.vol:1", "cannot read the volfile")
    bad = tmp_path / "bad.vol"
    bad.write_text(
        "volume c\n  type protocol/client\n  option remote-host 127.0.0.1\n"
        "  option remote-subvolume brick\n  option colour blue\nend-volume\n"
    )
    result = glusterpy(*mount_args(bad, tmp_path / "mnt"))
    assert_user_error(result, "bad.vol:5", "colour")


def test_missing_fuse_device(client_vol, tmp_path):
    (tmp_path / "mnt").mkdir()
    result = glusterpy(*mount_args(client_vol, tmp_path / "mnt", "-o", "fuse-device=/no/fuse"))
    assert_user_error(result, "FUSE device /no/fuse is missing")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("entry-timeout=soon", "not a number of seconds"),
        ("attr-timeout=-1", "between 0 and 3600"),
        ("binding=nfs", "binding=nfs"),
        ("colour=blue", "unknown mount option 'colour'"),
        ("entry-timeout", "needs a value"),
    ],
)
def test_bad_mount_options(client_vol, tmp_path, option, fragment):
    (tmp_path / "mnt").mkdir()
    assert_user_error(glusterpy(*mount_args(client_vol, tmp_path / "mnt", "-o", option)), fragment)


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and b"mount" in cmdline:
            pids.append(int(entry))
    return pids


def test_daemonized_mount_and_umount(brick_factory, tmp_path):
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    mnt = tmp_path / "daemon-mnt"
    mnt.mkdir()
    args = ["mount", "-f", str(volfile), str(mnt), "--log-file", str(tmp_path / "d.log")]
    try:
        result = glusterpy(*args)
        assert result.returncode == 0, result.stderr
        # The command returns only once the volume is mounted.
        assert mount_entry(mnt) == ("fuse.glusterpy", "glusterpy:client")
        (mnt / "f").write_bytes(b"through the daemon")
        assert (brick.directory / "f").read_bytes() == b"through the daemon"
        pids = _processes_mentioning(str(mnt))
        assert len(pids) == 1
        assert glusterpy("umount", str(mnt)).returncode == 0
        assert not is_mounted(mnt)
        wait_until(lambda: not _processes_mentioning(str(mnt)), 15, "the mount daemon to exit")
    finally:
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], timeout=30)
        for pid in _processes_mentioning(str(mnt)):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(volume, signum):
    (volume.path / "f").write_bytes(b"data")
    os.kill(volume.pid, signum)
    assert volume.wait_exit() == 0
    assert not is_mounted(volume.path)
    assert f"volume client unmounted from {volume.path}" in volume.log_file.read_text()


def test_umount_errors(volume, tmp_path):
    (tmp_path / "plain").mkdir()
    assert_user_error(glusterpy("umount", str(tmp_path / "plain")), "is not mounted")
    tmpfs = tmp_path / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmpfs)], check=True, timeout=30)
    try:
        assert_user_error(glusterpy("umount", str(tmpfs)), "is not a glusterpy mount")
        assert is_mounted(tmpfs)
    finally:
        subprocess.run(["umount", "-l", str(tmpfs)], timeout=30)


def test_busy_mount_needs_lazy_umount(volume):
    with open(volume.path / "open", "wb"):
        assert_user_error(glusterpy("umount", str(volume.path)), "cannot unmount")
        assert is_mounted(volume.path)
        assert glusterpy("umount", "-l", str(volume.path)).returncode == 0
        assert not is_mounted(volume.path)
    assert volume.wait_exit() == 0


def test_dead_mount_is_named_and_cleared(volume, tmp_path):
    os.kill(volume.pid, signal.SIGKILL)
    volume.wait_exit()
    assert is_mounted(volume.path)
    again = Mount(volume.volfile, volume.path, tmp_path / "again.log")
    result = glusterpy(*again.command()[1:])
    assert_user_error(result, "dead mount", "glusterpy umount -l")
    assert glusterpy("umount", "-l", str(volume.path)).returncode == 0
    assert not is_mounted(volume.path)


def test_mount_point_with_spaces(brick_factory, mount_factory, tmp_path):
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    mount = mount_factory(volfile, "mail spool")
    (mount.path / "f").write_bytes(b"x")
    assert glusterpy(*mount_args(volfile, mount.path)).stderr.count("busy") == 1
    assert glusterpy("umount", str(mount.path)).returncode == 0
    assert not is_mounted(mount.path)
    assert mount.wait_exit() == 0
