"""Our own FUSE binding: it speaks the kernel protocol over /dev/fuse, without libfuse.

`abi` holds the wire format, `mount` opens and closes the connection, `handlers` maps requests
onto the file system (the bridge), and `session` runs the trio loop. `serve_mount` puts them
together for a caller that has a file system object and a mountpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from glusterpy.fuse.kernel.mount import open_connection, set_read_ahead, unmount
from glusterpy.fuse.kernel.session import Session, SessionOptions

log = logging.getLogger(__name__)

__all__ = ["Session", "SessionOptions", "serve_mount"]


async def serve_mount(
    fs: Any,
    mountpoint: str,
    fsname: str,
    options: SessionOptions | None = None,
    read_ahead_kb: int | None = None,
    via_fusermount: bool = False,
    task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount `fs` on `mountpoint` and serve it until it is unmounted or we are cancelled.

    The mount is always gone when this returns: cancelling detaches it lazily. `task_status`
    gets the session as soon as the mount exists (before INIT), for its notifications.
    """
    fd = open_connection(mountpoint, fsname, via_fusermount=via_fusermount)
    try:
        if read_ahead_kb is not None and not set_read_ahead(mountpoint, read_ahead_kb):
            log.info("read-ahead of %s left as the kernel set it", mountpoint)
        session = Session(fs, fd, options)
        task_status.started(session)
        await session.serve()
    finally:
        try:
            unmount(mountpoint)
        except OSError:
            # Already unmounted: that is how a session normally ends.
            pass
        os.close(fd)
