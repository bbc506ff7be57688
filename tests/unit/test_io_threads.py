"""Unit tests of performance/io-threads: bounded threads for blocking calls below it.

A stand-in child blocks a thread on a threading.Event, so the tests can hold a call "on the
disk" for as long as they like and check that other calls still get through, without any
timing assertion. One test runs real storage/posix below io-threads.
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import trio
import trio.testing

from glusterpy.volfile import registry
from glusterpy.xlator import FOPS, ROOT_GFID, Translator, run_blocking
from glusterpy.xlators.performance.io_threads import IoThreads
from glusterpy.xlators.storage.posix import Posix

TIMEOUT = 10


class SlowChild(Translator):
    """`read` blocks its thread until `release` is set; `readlink` and `stat` return at once.

    Both report the thread they ran in, so a test can tell inline calls from pooled ones.
    """

    def __init__(self):
        super().__init__("slow", [], {})
        self.release = threading.Event()

    async def read(self, fh, offset, size):
        return await run_blocking(self._block)

    async def readlink(self, gfid):
        return await run_blocking(threading.get_ident)

    async def stat(self, gfid):
        return await run_blocking(threading.get_ident)

    def _block(self):
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("the test never released the slow call")
        return threading.get_ident()


def io_threads(child, count, inline=None):
    options = {"thread-count": count, "autoscaling": False, "min-threads": 1, "max-threads": 256}
    if inline is not None:
        options["inline-fops"] = inline
    return IoThreads("iot", [child], options)


def test_a_slow_call_does_not_stall_the_others():
    child = SlowChild()
    iot = io_threads(child, 2)

    async def main():
        with trio.fail_after(TIMEOUT):
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(iot.read, 1, 0, 1)
                    await trio.testing.wait_all_tasks_blocked()
                    assert iot.limiter.borrowed_tokens == 1
                    for _ in range(5):
                        assert await iot.readlink(ROOT_GFID) != threading.get_ident()
                    assert iot.limiter.borrowed_tokens == 1
                    child.release.set()
            finally:
                child.release.set()

    trio.run(main)


def test_thread_count_bounds_the_blocking_calls():
    child = SlowChild()
    iot = io_threads(child, 2)

    async def main():
        with trio.fail_after(TIMEOUT):
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(iot.read, 1, 0, 1)
                    await trio.testing.wait_all_tasks_blocked()
                    stats = iot.limiter.statistics()
                    assert (stats.borrowed_tokens, stats.tasks_waiting) == (2, 1)
                    child.release.set()
            finally:
                child.release.set()

    trio.run(main)


def test_without_io_threads_blocking_calls_run_inline():
    child = SlowChild()

    async def main():
        assert await child.readlink(ROOT_GFID) == threading.get_ident()
        assert await io_threads(child, 1).readlink(ROOT_GFID) != threading.get_ident()

    trio.run(main)


def test_inline_fops_run_on_the_event_loop_and_the_rest_in_threads():
    child = SlowChild()
    here = threading.get_ident()

    async def main():
        default = io_threads(child, 1)
        assert await default.stat(ROOT_GFID) == here  # stat is inline by default
        assert await default.readlink(ROOT_GFID) != here
        chosen = io_threads(child, 1, ("readlink",))
        assert await chosen.readlink(ROOT_GFID) == here
        assert await chosen.stat(ROOT_GFID) != here
        assert await io_threads(child, 1, ("none",)).stat(ROOT_GFID) != here

    trio.run(main)


def test_inline_fops_must_name_fops():
    with pytest.raises(ValueError, match="'inline-fops': stats is not a fop"):
        io_threads(SlowChild(), 1, ("stat", "stats"))


def test_every_fop_is_passed_down_by_io_threads_itself():
    for fop in FOPS:
        assert fop in vars(IoThreads), fop
    kind = registry.get("performance/io-threads")
    assert kind.factory is IoThreads
    for key in ("thread-count", "inline-fops", "autoscaling", "min-threads", "max-threads"):
        assert kind.find_option(key) is not None


def test_real_posix_below_io_threads(tmp_path):
    posix = Posix("posix", [], {"directory": str(tmp_path), "export-statfs-size": True})
    iot = io_threads(posix, 4)
    gfid = uuid.uuid4().bytes

    async def main():
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await posix.start(nursery)
                await iot.start(nursery)
                try:
                    fh, iatt = await iot.create(ROOT_GFID, b"f", os.O_RDWR, 0o644, 0, 0, gfid)
                    assert iatt.gfid == gfid
                    await iot.write(fh, 0, b"through the pool")
                    assert await iot.read(fh, 0, 100) == b"through the pool"
                    await iot.release(fh)
                    dh = await iot.opendir(ROOT_GFID)
                    assert [e.name for e in await iot.readdir(dh, 0, 10)] == [b"f"]
                    await iot.releasedir(dh)
                finally:
                    await posix.stop()

    trio.run(main)
