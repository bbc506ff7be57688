"""Our own FUSE binding: it speaks the kernel protocol over /dev/fuse, without libfuse.

`abi` holds the wire format, `mount` opens and closes the connection, `handlers` maps requests
onto the file system (the bridge), and `session` runs the trio loop. `serve_mount` puts them
together for a caller that has a file system object and a mountpoint; `serve` and
`EXTRA_OPTIONS` are the binding interface `glusterpy mount` uses (see bridge.MountConfig).
"""

from __future__ import annotations

import errno
import logging
import math
import os
from typing import Any

import trio

from glusterpy.fuse.kernel.mount import open_connection, set_read_ahead, unmount
from glusterpy.fuse.kernel.session import Session, SessionOptions

log = logging.getLogger(__name__)

__all__ = ["EXTRA_OPTIONS", "Session", "SessionOptions", "serve", "serve_mount"]


async def serve_mount(
    fs: Any,
    mountpoint: str,
    fsname: str,
    options: SessionOptions | None = None,
    read_ahead_kb: int | None = None,
    via_fusermount: bool = False,
    allow_other: bool = True,
    device: str = "/dev/fuse",
    task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount `fs` on `mountpoint` and serve it until it is unmounted or we are cancelled.

    On a clean end (unmounted, or cancelled) the mount is gone when this returns: cancelling
    detaches it lazily. After an unexpected error it stays, dead, so that programs get ENOTCONN
    instead of writing into the directory underneath. `task_status` gets the session as soon
    as the mount exists (before INIT), for its notifications.
    """
    fd = open_connection(mountpoint, fsname, allow_other, via_fusermount, device)
    clean = False
    try:

        def after_init(negotiated: Any) -> None:
            # Not before: INIT lowers the device's read-ahead to the max_readahead we answer.
            if read_ahead_kb is not None and not set_read_ahead(mountpoint, read_ahead_kb):
                log.info("read-ahead of %s left as the kernel set it", mountpoint)

        session = Session(fs, fd, options, on_init=after_init)
        task_status.started(session)
        await session.serve()
        clean = True
    finally:
        # Inside a cancelled scope the effective deadline is -inf: a requested stop is clean.
        if clean or trio.current_effective_deadline() == -math.inf:
            _unmount_quietly(mountpoint)
        else:
            log.error("%s on %s left mounted (dead) after an error", fsname, mountpoint)
        os.close(fd)


def _unmount_quietly(mountpoint: str) -> None:
    try:
        unmount(mountpoint)
    except OSError as exc:
        # EINVAL: already unmounted, which is how a session normally ends.
        if exc.errno != errno.EINVAL:
            log.warning("could not unmount %s: %s", mountpoint, exc)


# Imported last: the binding module uses serve_mount from this package.
from glusterpy.fuse.kernel.binding import EXTRA_OPTIONS, serve  # noqa: E402
