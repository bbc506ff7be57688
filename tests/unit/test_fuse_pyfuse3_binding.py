"""Unit tests of the pyfuse3 binding's guard: what a handler raises is what pyfuse3 may see.

pyfuse3 ends its main loop on any exception that is not FUSEError, so the binding must turn an
OSError into its errno and anything else into EIO with one logged traceback, and must let trio's
cancellation through untouched. These tests call the handlers directly (no kernel).
"""

from __future__ import annotations

import errno
import logging

import pyfuse3
import pytest
import trio

from glusterpy.fuse.bridge import MountConfig
from glusterpy.fuse.pyfuse3_binding import Operations, fuse_errors, mount_options


class ExplodingBridge:
    """A bridge whose every call fails the way it was told to."""

    negative_timeout = 0.0

    def __init__(self, exc: BaseException):
        self.exc = exc
        self.forgotten: list = []

    async def lookup(self, parent, name):
        raise self.exc

    async def read(self, fh, offset, size):
        raise self.exc

    def forget(self, items):
        raise self.exc


def call(coro_fn, *args):
    async def main():
        return await coro_fn(*args)

    return trio.run(main)


def fuse_errno(coro_fn, *args) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        call(coro_fn, *args)
    return info.value.errno


def test_oserror_becomes_its_errno():
    ops = Operations(ExplodingBridge(OSError(errno.EACCES, "denied")))
    assert fuse_errno(ops.lookup, 1, b"x", None) == errno.EACCES


def test_oserror_without_errno_becomes_eio():
    ops = Operations(ExplodingBridge(OSError("no errno")))
    assert fuse_errno(ops.read, 1, 0, 10) == errno.EIO


def test_unexpected_exception_is_eio_and_logged_once(caplog):
    ops = Operations(ExplodingBridge(ZeroDivisionError("bug in a translator")))
    with caplog.at_level(logging.ERROR, logger="glusterpy.fuse.pyfuse3_binding"):
        assert fuse_errno(ops.read, 1, 0, 10) == errno.EIO
    records = [r for r in caplog.records if r.name == "glusterpy.fuse.pyfuse3_binding"]
    assert len(records) == 1
    assert "read" in records[0].getMessage() and records[0].exc_info is not None
    # The same handler keeps answering afterwards: nothing was left broken.
    assert fuse_errno(ops.read, 1, 0, 10) == errno.EIO


def test_fuse_error_passes_unchanged():
    @fuse_errors
    async def handler():
        raise pyfuse3.FUSEError(errno.ENOSPC)

    assert fuse_errno(handler) == errno.ENOSPC


def test_cancellation_is_not_turned_into_an_error():
    @fuse_errors
    async def handler():
        await trio.sleep_forever()

    async def main():
        with trio.move_on_after(0.01) as scope:
            await handler()
        return scope.cancelled_caught

    assert trio.run(main) is True


def test_negative_lookup_is_cached_only_when_asked():
    bridge = ExplodingBridge(OSError(errno.ENOENT, "missing"))
    ops = Operations(bridge)
    assert fuse_errno(ops.lookup, 1, b"x", None) == errno.ENOENT
    bridge.negative_timeout = 2.5
    answer = call(ops.lookup, 1, b"x", None)
    assert answer.st_ino == 0 and answer.entry_timeout == 2.5


def test_forget_swallows_errors(caplog):
    ops = Operations(ExplodingBridge(RuntimeError("bad table")))
    with caplog.at_level(logging.ERROR):
        call(ops.forget, [(5, 1)])
    assert any("forget" in r.getMessage() for r in caplog.records)


def test_mount_options():
    config = MountConfig("/mnt/x", "vol1")
    assert mount_options(config) == {
        "default_permissions",
        "allow_other",
        "fsname=glusterpy:vol1",
        "subtype=glusterpy",
    }
    assert Operations.enable_writeback_cache is False
