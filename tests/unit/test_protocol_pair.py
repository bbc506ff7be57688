"""protocol/client and protocol/server in one process, over real loopback TCP.

A small in-memory translator stands below the server so these tests need no storage; the
integration tests (tests/integration/test_protocol.py) run the same paths against real
glusterpyd processes.
"""

from __future__ import annotations

import errno
import logging
import random
from typing import Any

import pytest
import trio

from glusterpy.graph import Graph
from glusterpy.xlator import ROOT_GFID, Event, Flock, Iatt, Translator
from glusterpy.xlators.protocol.client import Client
from glusterpy.xlators.protocol.server import Server

WAIT = 10


def options_for(cls: type[Translator], **given: Any) -> dict[str, Any]:
    values = {
        o.key: None if o.default is None else o.type.parse(o.default)
        for o in cls.options_table
        if not o.is_pattern
    }
    values.update(given)
    return values


class MemStore(Translator):
    """Files in a dict; reads sleep a random moment so replies finish out of order."""

    def __init__(self, name: str = "mem"):
        super().__init__(name, [], {})
        self.names: dict[tuple[bytes, bytes], bytes] = {}
        self.data: dict[bytes, bytearray] = {}
        self.handles: dict[int, bytes] = {}
        self.next_fh = 100
        self.locks: dict[bytes, bytes] = {}
        self.owners_seen: list[bytes] = []
        self.disconnected: list[str] = []
        self.flushed: list[bytes] = []

    def iatt(self, gfid: bytes) -> Iatt:
        size = len(self.data.get(gfid, b""))
        return Iatt(gfid, 0o100644, 1, 0, 0, 0, size, 0, 4096, 0, 0, 0)

    async def lookup(self, parent, name, xdata=None):
        try:
            return self.iatt(self.names[parent, name]), {}
        except KeyError:
            raise OSError(errno.ENOENT, "no such entry") from None

    async def stat(self, gfid):
        return self.iatt(gfid)

    async def statfs(self, gfid):
        raise RuntimeError("a bug below the server")

    async def create(self, parent, name, flags, mode, uid, gid, gfid):
        self.names[parent, name] = gfid
        self.data[gfid] = bytearray()
        return await self.open(gfid, flags), self.iatt(gfid)

    async def open(self, gfid, flags):
        if gfid not in self.data:
            raise OSError(errno.ENOENT, "gone")
        self.next_fh += 1
        self.handles[self.next_fh] = gfid
        return self.next_fh

    async def read(self, fh, offset, size):
        await trio.sleep(random.random() / 100)
        return bytes(self.data[self.handles[fh]][offset : offset + size])

    async def write(self, fh, offset, data):
        await trio.sleep(random.random() / 100)
        buf = self.data[self.handles[fh]]
        if len(buf) < offset:
            buf.extend(bytes(offset - len(buf)))
        buf[offset : offset + len(data)] = data
        return len(data)

    async def release(self, fh):
        del self.handles[fh]

    async def flush(self, fh, owner):
        self.flushed.append(owner)

    async def lk(self, fh, cmd, lock):
        return lock

    async def inodelk(self, domain, gfid, cmd, lock):
        self.owners_seen.append(lock.owner)
        holder = self.locks.get(gfid)
        if holder is not None and holder != lock.owner:
            raise OSError(errno.EAGAIN, "locked")
        self.locks[gfid] = lock.owner

    async def client_disconnect(self, client):
        self.disconnected.append(client)
        prefix = client.encode() + b":"
        self.locks = {g: o for g, o in self.locks.items() if not o.startswith(prefix)}


class Brick:
    """A server graph over a MemStore; after its first start it keeps its port."""

    def __init__(self, allow: str = "127.0.0.1"):
        self.store = MemStore()
        self.allow = allow
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> trio.Event:
        """Serve until the returned event is set."""
        options = options_for(
            Server,
            **{
                "transport.socket.bind-address": "127.0.0.1",
                "transport.socket.listen-port": self.port,
                "auth.addr.mem.allow": (self.allow,),
            },
        )
        server = Server("server", [self.store], options)
        stop = trio.Event()
        await run_graph(nursery, Graph({"mem": self.store, "server": server}, server), stop)
        self.port = server.port
        return stop

    async def client(self, nursery: trio.Nursery, ping_timeout: float = 2.0) -> Client:
        options = options_for(
            Client,
            **{
                "remote-host": "127.0.0.1",
                "remote-port": self.port,
                "remote-subvolume": "mem",
                "ping-timeout": ping_timeout,
            },
        )
        client = Client("client", [], options)
        await run_graph(nursery, Graph({"client": client}, client))
        return client

    async def up_client(self, nursery: trio.Nursery) -> Client:
        """A client of this brick, once its connection is up."""
        client = await self.client(nursery)
        await wait_for(lambda: client.is_up, "client up")
        return client


async def run_graph(nursery: trio.Nursery, graph: Graph, stop: trio.Event | None = None) -> None:
    """Start a graph in `nursery`; it runs until `stop` is set or the nursery is cancelled."""
    ready = trio.Event()

    async def run() -> None:
        async with graph.running():
            ready.set()
            await (stop if stop is not None else trio.Event()).wait()

    nursery.start_soon(run)
    await ready.wait()


async def wait_for(predicate, what: str) -> None:
    with trio.fail_after(WAIT):
        while not predicate():
            await trio.sleep(0.01)


def test_fops_travel_and_errors_come_back_as_errno(caplog):
    async def main():
        brick = Brick()
        async with trio.open_nursery() as nursery:
            await brick.start(nursery)
            client = await brick.up_client(nursery)

            gfid = bytes(range(16))
            fh, iatt = await client.create(ROOT_GFID, b"f", 0o2, 0o644, 0, 0, gfid)
            assert iatt.gfid == gfid
            assert await client.write(fh, 0, b"hello world") == 11
            assert await client.read(fh, 6, 100) == b"world"
            assert (await client.lookup(ROOT_GFID, b"f"))[0].size == 11
            for call, expected in [
                (client.lookup(ROOT_GFID, b"nothing"), errno.ENOENT),
                (client.statfs(ROOT_GFID), errno.EIO),
                (client.read(fh + 1000, 0, 1), errno.EBADF),
            ]:
                with pytest.raises(OSError) as failed:
                    await call
                assert failed.value.errno == expected
            await client.release(fh)
            assert brick.store.handles == {}
            nursery.cancel_scope.cancel()

    caplog.set_level(logging.DEBUG)
    trio.run(main)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("statfs" in message and "a bug below" in message for message in errors)


def test_pipelined_requests_are_answered_out_of_order_correctly():
    async def main():
        brick = Brick()
        async with trio.open_nursery() as nursery:
            await brick.start(nursery)
            client = await brick.up_client(nursery)
            fh, _ = await client.create(ROOT_GFID, b"f", 0o2, 0o644, 0, 0, bytes(16))
            blocks = {i: bytes([i]) * (1000 + i * 517) for i in range(64)}
            offsets = {i: i * 40_000 for i in blocks}

            async def write(i: int) -> None:
                assert await client.write(fh, offsets[i], blocks[i]) == len(blocks[i])

            async with trio.open_nursery() as writers:
                for i in blocks:
                    writers.start_soon(write, i)

            answers: dict[int, bytes] = {}
            order: list[int] = []

            async def read(i: int) -> None:
                answers[i] = await client.read(fh, offsets[i], len(blocks[i]))
                order.append(i)

            async with trio.open_nursery() as readers:
                for i in blocks:
                    readers.start_soon(read, i)
            nursery.cancel_scope.cancel()
            return blocks, answers, order

    blocks, answers, order = trio.run(main)
    assert answers == blocks
    assert order != sorted(order)  # the store's random delays finished them out of order


def test_refused_client_never_comes_up_and_says_why(caplog):
    async def main():
        brick = Brick(allow="10.9.9.9")
        async with trio.open_nursery() as nursery:
            await brick.start(nursery)
            client = await brick.client(nursery)
            await wait_for(lambda: client._announced is False, "client reported down")
            with pytest.raises(OSError) as down:
                await client.stat(ROOT_GFID)
            assert down.value.errno == errno.ENOTCONN
            await trio.sleep(0.5)  # several retries; the reason is still logged once
            assert not client.is_up
            nursery.cancel_scope.cancel()

    trio.run(main)
    refusals = [r.getMessage() for r in caplog.records if "refused us" in r.getMessage()]
    assert len(refusals) == 1
    assert "authentication failed for subvolume mem" in refusals[0]


def test_brick_restart_goes_down_and_up_and_reopens_handles():
    async def main():
        brick = Brick()
        events: list[Event] = []
        async with trio.open_nursery() as nursery:
            stop = await brick.start(nursery)
            client = await brick.client(nursery)
            client.parents.append(_Recorder(events))
            await wait_for(lambda: client.is_up, "client up")
            fh, _ = await client.create(ROOT_GFID, b"f", 0o2, 0o644, 0, 0, bytes(16))
            await client.write(fh, 0, b"survives")

            stop.set()
            await wait_for(lambda: not client.is_up, "client down")
            with pytest.raises(OSError) as down:
                await client.read(fh, 0, 8)
            assert down.value.errno == errno.ENOTCONN

            await brick.start(nursery)
            await wait_for(lambda: client.is_up, "client up again")
            assert await client.read(fh, 0, 8) == b"survives"
            nursery.cancel_scope.cancel()
        return events

    events = trio.run(main)
    assert events[:3] == [Event.CHILD_UP, Event.CHILD_DOWN, Event.CHILD_UP]


def test_locks_die_with_the_client_connection():
    async def main():
        brick = Brick()
        gfid = bytes(range(16))
        lock = Flock(1, 0, 0, 1, b"me")
        async with trio.open_nursery() as nursery:
            await brick.start(nursery)
            async with trio.open_nursery() as first_client:
                one = await brick.client(first_client)
                await wait_for(lambda: one.is_up, "first client up")
                await one.inodelk("d", gfid, 6, lock)
                first_client.cancel_scope.cancel()
            await wait_for(lambda: brick.store.disconnected, "the brick saw the disconnect")
            two = await brick.client(nursery)
            await wait_for(lambda: two.is_up, "second client up")
            await two.inodelk("d", gfid, 6, lock)  # would be EAGAIN if the lock had stayed
            nursery.cancel_scope.cancel()
        return brick.store

    store = trio.run(main)
    first, second = store.owners_seen
    assert first.endswith(b":me") and second.endswith(b":me") and first != second
    assert first.startswith(store.disconnected[0].encode() + b":")


def test_compound_runs_in_order_on_the_brick_and_stops_at_the_first_failure():
    async def main():
        brick = Brick()
        gfid = bytes(range(16))
        async with trio.open_nursery() as nursery:
            await brick.start(nursery)
            one, two = await brick.client(nursery), await brick.client(nursery)
            await wait_for(lambda: one.is_up and two.is_up, "clients up")
            # A handle a compound makes is this client's own at once.
            [(fh, _)] = await one.compound([("create", (ROOT_GFID, b"f", 2, 0o644, 0, 0, gfid))])
            lock = ("inodelk", ("d", gfid, 6, Flock(1, 0, 0, 1, b"one")))
            got = await one.compound([lock, ("write", (fh, 0, b"first")), ("stat", (gfid,))])
            assert got[:2] == [None, 5] and got[2].size == 5
            fh_two = await two.open(gfid, 2)
            other = ("inodelk", ("d", gfid, 6, Flock(1, 0, 0, 1, b"two")))
            got = await two.compound([other, ("write", (fh_two, 0, b"second")), ("stat", (gfid,))])
            assert len(got) == 1 and got[0].errno == errno.EAGAIN
            assert bytes(brick.store.data[gfid]) == b"first"  # the write after it did not run
            bad = await one.compound([("stat", (gfid,)), ("write", (fh + 99, 0, b"x"))])
            assert bad[0].gfid == gfid and bad[1].errno == errno.EBADF  # our own handle check
            assert len(bad) == 2
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_flush_reaches_the_brick_only_for_files_this_client_locked():
    async def main():
        brick = Brick()
        async with trio.open_nursery() as nursery:
            await brick.start(nursery)
            client = await brick.up_client(nursery)
            plain, _ = await client.create(ROOT_GFID, b"plain", 2, 0o644, 0, 0, bytes(16))
            locked, _ = await client.create(ROOT_GFID, b"locked", 2, 0o644, 0, 0, b"\1" * 16)
            await client.flush(plain, b"me")
            assert brick.store.flushed == []  # no lock to drop: no round trip
            await client.lk(locked, 6, Flock(1, 0, 0, 1, b"me"))
            await client.flush(locked, b"me")
            other = await client.open(b"\1" * 16, 2)  # POSIX: any close drops the locks
            await client.flush(other, b"me")
            assert len(brick.store.flushed) == 2
            with pytest.raises(OSError) as gone:
                await client.flush(plain + 99, b"me")
            assert gone.value.errno == errno.EBADF
            nursery.cancel_scope.cancel()

    trio.run(main)


class _Recorder:
    """Stands in for a parent translator and records the events it is sent."""

    def __init__(self, events: list[Event]):
        self.events = events

    def notify(self, event: Event, child: Translator) -> None:
        self.events.append(event)
