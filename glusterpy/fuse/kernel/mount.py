"""Opening a FUSE connection on a mountpoint, and closing it.

As root we open /dev/fuse and call mount(2) ourselves; otherwise fusermount3 mounts and hands
the device fd back over a socketpair (SCM_RIGHTS), which is the only way a user may mount. The
returned fd is the connection: reading it yields requests, and it reports ENODEV once the file
system is unmounted. mount(2) returns before INIT, so the first access of the mountpoint blocks
until the session answers INIT: never touch the mountpoint from the thread that serves it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import socket
import stat
import subprocess

log = logging.getLogger(__name__)

MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2
FUSERMOUNT = "fusermount3"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount_options(fd: int | None, mountpoint: str, allow_other: bool) -> list[str]:
    """The FUSE mount options we always give; `fd` is omitted when fusermount3 adds its own."""
    root_mode = stat.S_IFMT(os.stat(mountpoint).st_mode)
    options = [] if fd is None else [f"fd={fd}"]
    options += [f"rootmode={root_mode:o}", f"user_id={os.getuid()}", f"group_id={os.getgid()}"]
    options.append("default_permissions")
    if allow_other:
        options.append("allow_other")
    return options


def open_connection(
    mountpoint: str,
    fsname: str,
    allow_other: bool = True,
    via_fusermount: bool = False,
    device: str = "/dev/fuse",
) -> int:
    """Mount a FUSE file system on `mountpoint` and return the connection's fd.

    Root mounts directly unless `via_fusermount`; anyone else goes through fusermount3. The fd
    is non-blocking; the caller owns it and closes it after unmounting.
    """
    mountpoint = os.path.abspath(mountpoint)
    if not os.path.isdir(mountpoint):
        raise OSError(errno.ENOTDIR, f"mountpoint {mountpoint} is not a directory")
    if os.geteuid() == 0 and not via_fusermount:
        fd = _mount_as_root(mountpoint, fsname, allow_other, device)
    else:
        fd = _mount_with_fusermount(mountpoint, fsname, allow_other)
    os.set_blocking(fd, False)
    log.info("mounted %s on %s (fd %d)", fsname, mountpoint, fd)
    return fd


def _mount_as_root(mountpoint: str, fsname: str, allow_other: bool, device: str) -> int:
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    data = ",".join(mount_options(fd, mountpoint, allow_other))
    source = fsname.encode()
    fstype = b"fuse." + _subtype(fsname)
    result = _libc.mount(source, mountpoint.encode(), fstype, MS_NOSUID | MS_NODEV, data.encode())
    if result != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount {mountpoint}: {os.strerror(err)}")
    return fd


def _subtype(fsname: str) -> bytes:
    # The type shown in /proc/mounts: fuse.<first word of the fsname, safe characters only>.
    word = fsname.split(":", 1)[0].split("/")[-1] or "glusterpy"
    return "".join(c for c in word if c.isalnum() or c in "-_").encode() or b"glusterpy"


def _mount_with_fusermount(mountpoint: str, fsname: str, allow_other: bool) -> int:
    if shutil.which(FUSERMOUNT) is None:
        raise OSError(errno.ENOENT, f"{FUSERMOUNT} not found: needed to mount as a user")
    options = mount_options(None, mountpoint, allow_other)
    options = [o for o in options if not o.startswith(("rootmode=", "user_id=", "group_id="))]
    options += [f"fsname={fsname}", "subtype=" + _subtype(fsname).decode(), "nosuid", "nodev"]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        command = [FUSERMOUNT, "-o", ",".join(options), "--", mountpoint]
        proc = subprocess.run(
            command, env=env, pass_fds=(theirs.fileno(),), capture_output=True, timeout=30
        )
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip()
            raise OSError(errno.EPERM, f"{FUSERMOUNT} failed on {mountpoint}: {detail}")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise OSError(errno.EIO, f"{FUSERMOUNT} passed no fd for {mountpoint}")
    return fds[0]


def unmount(mountpoint: str, lazy: bool = True) -> None:
    """Unmount `mountpoint`; lazily by default so that busy files never keep it hanging."""
    mountpoint = os.path.abspath(mountpoint)
    if os.geteuid() == 0:
        flags = MNT_DETACH if lazy else 0
        if _libc.umount2(mountpoint.encode(), flags) == 0:
            return
        err = ctypes.get_errno()
        raise OSError(err, f"umount {mountpoint}: {os.strerror(err)}")
    command = [FUSERMOUNT, "-u"] + (["-z"] if lazy else []) + ["--", mountpoint]
    proc = subprocess.run(command, capture_output=True, timeout=30)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()
        raise OSError(errno.EBUSY, f"{FUSERMOUNT} -u {mountpoint}: {detail}")


def connection_device(mountpoint: str) -> str | None:
    """The mount's "major:minor" from /proc/self/mountinfo, read without touching the mount."""
    mountpoint = os.path.abspath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    device = None
    for line in lines:
        fields = line.split()
        # Octal escapes (\040 for space) stand in for special characters in mountinfo paths.
        path = fields[4].encode().decode("unicode_escape")
        if path == mountpoint and " - fuse" in line:
            device = fields[2]
    return device


def set_read_ahead(mountpoint: str, kib: int) -> bool:
    """Set the read-ahead of the mount's backing device (root only); False when it cannot."""
    device = connection_device(mountpoint)
    if device is None:
        return False
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(kib))
    except OSError as exc:
        log.debug("cannot set read-ahead of %s: %s", mountpoint, exc)
        return False
    return True
