"""protocol/client against real glusterpyd bricks on 127.0.0.1 (posix, locks, io-threads).

Client graphs run inside the test process (built from client volfiles); bricks are real daemon
processes started by tests.support.bricks (the brick_factory fixture of tests/conftest.py)
and killed by pid in teardown.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import trio

from glusterpy.graph import Graph
from glusterpy.rpc import codec
from glusterpy.volfile.parse import parse_file
from glusterpy.xlator import ROOT_GFID, Event, Flock, Translator
from tests.support.bricks import (
    GLUSTERPYD,
    Brick,
    free_port,
    write_brick_volfile,
    write_client_volfile,
)

pytestmark = pytest.mark.integration
WAIT = 15


class Recorder:
    """Stands in for a parent translator: records the client's up and down events."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event, child: Translator) -> None:
        self.events.append(event)


def client_graph(tmp_path: Path, brick: Brick, name: str = "client", ping_timeout=2) -> Graph:
    volfile = write_client_volfile(
        tmp_path / f"{name}.vol",
        brick.port,
        name=name,
        subvolume=brick.subvolume,
        ping_timeout=ping_timeout,
    )
    return Graph.build(parse_file(volfile))


async def wait_for(predicate, timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def create_file(client: Translator, name: bytes) -> tuple[int, bytes]:
    gfid = uuid.uuid4().bytes
    fh, iatt = await client.create(ROOT_GFID, name, os.O_RDWR, 0o644, 0, 0, gfid)
    assert iatt.gfid == gfid
    return fh, gfid


def test_fops_pipelined_on_one_connection(tmp_path, brick_factory):
    brick = brick_factory()
    graph = client_graph(tmp_path, brick)
    blocks = {i: os.urandom(65536 + i * 1000) for i in range(48)}

    async def main():
        async with graph.running():
            assert await graph.wait_up(WAIT)
            client = graph.top
            fh, gfid = await create_file(client, b"pipelined")

            async def write(i: int) -> None:
                assert await client.write(fh, i * 200_000, blocks[i]) == len(blocks[i])

            async with trio.open_nursery() as nursery:
                for i in blocks:
                    nursery.start_soon(write, i)

            answers = {}

            async def read(i: int) -> None:
                answers[i] = await client.read(fh, i * 200_000, len(blocks[i]))

            async with trio.open_nursery() as nursery:
                for i in blocks:
                    nursery.start_soon(read, i)
            assert {i: bytes(a) for i, a in answers.items()} == blocks

            await client.fsync(fh, False)
            await client.release(fh)
            iatt, _ = await client.lookup(ROOT_GFID, b"pipelined")
            assert iatt.gfid == gfid and iatt.size == 47 * 200_000 + len(blocks[47])
            with pytest.raises(OSError) as missing:
                await client.lookup(ROOT_GFID, b"absent")
            assert missing.value.errno == errno.ENOENT

    trio.run(main)
    assert (brick.directory / "pipelined").stat().st_size == 47 * 200_000 + len(blocks[47])
    assert brick.log_text().count("connected from") == 1


def test_a_client_refused_by_auth_addr_is_told_why_and_served_nothing(tmp_path, brick_factory):
    brick = brick_factory(allow="10.255.255.1")
    graph = client_graph(tmp_path, brick)
    (brick.directory / "secret").write_bytes(b"not for you")

    async def main():
        async with graph.running():
            recorder = Recorder()
            graph.top.parents.append(recorder)
            await wait_for(lambda: "refused client" in brick.log_text())
            assert not await graph.wait_up(1)
            with pytest.raises(OSError) as refused:
                await graph.top.lookup(ROOT_GFID, b"secret")
            assert refused.value.errno == errno.ENOTCONN

    trio.run(main)
    assert "authentication failed for subvolume brick" in brick.log_text()
    assert brick.alive()


def test_no_auth_option_means_access_denied(tmp_path, brick_factory, caplog):
    brick = brick_factory(allow=None)
    graph = client_graph(tmp_path, brick)

    async def main():
        async with graph.running():
            await wait_for(lambda: "refused client" in brick.log_text())
            assert not graph.top.is_up

    trio.run(main)
    assert any("refused us" in r.getMessage() for r in caplog.records)
    assert "no auth.addr.brick.allow option" in brick.log_text()


# --- bad frames ---------------------------------------------------------------------------------


def raw_connect(brick: Brick) -> socket.socket:
    return socket.create_connection(("127.0.0.1", brick.port), timeout=WAIT)


def raw_frame(op: int, body, payload: bytes = b"") -> bytes:
    header = codec.pack_header(1, op, body)
    return codec.pack_prefix(codec.REQUEST, len(header), len(payload)) + header + payload


def raw_handshake(brick: Brick) -> socket.socket:
    sock = raw_connect(brick)
    hello = {"version": codec.PROTOCOL_VERSION, "uuid": "raw", "subvolume": brick.subvolume}
    sock.sendall(raw_frame(codec.OP_HANDSHAKE, hello))
    prefix = sock.recv(codec.PREFIX.size, socket.MSG_WAITALL)
    _, header_len, _ = codec.unpack_prefix(prefix)
    _, err, _ = codec.unpack_header(sock.recv(header_len, socket.MSG_WAITALL))
    assert err == 0
    return sock


def closed_by_brick(sock: socket.socket) -> bool:
    """True when the brick closes the connection (within the socket's timeout)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: brick\r\n\r\n", id="http"),
        pytest.param(codec.pack_prefix(codec.REQUEST, 8, 1 << 31), id="oversized-payload"),
        pytest.param(codec.pack_prefix(codec.REQUEST, 1 << 30, 0), id="oversized-header"),
        pytest.param(raw_frame(codec.OP_PING, None)[:-1], id="truncated"),
        pytest.param(raw_frame(0, [b"x"]), id="fop-before-handshake"),
    ],
)
def test_bad_frames_close_one_connection_and_the_brick_serves_on(tmp_path, brick_factory, garbage):
    brick = brick_factory()
    before = raw_connect(brick)  # an idle, well-behaved connection that must survive
    bad = raw_connect(brick)
    bad.sendall(garbage)
    bad.shutdown(socket.SHUT_WR)
    assert closed_by_brick(bad)
    bad.close()
    _assert_brick_still_serves(tmp_path, brick)
    before.close()


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00" * 64, id="zeros"),
        pytest.param(codec.pack_prefix(codec.REQUEST, 8, codec.MAX_PAYLOAD + 1), id="oversized"),
        pytest.param(raw_frame(0, [b"short gfid", b"name", None]), id="bad-arguments"),
        pytest.param(raw_frame(999, []), id="unknown-op"),
        pytest.param(raw_frame(codec.OP_BY_FOP["stat"], [ROOT_GFID], b"xx"), id="stray-payload"),
        pytest.param(raw_frame(codec.OP_COMPOUND, []), id="empty-compound"),
        pytest.param(
            raw_frame(codec.OP_COMPOUND, [[codec.OP_BY_FOP["stat"], [b"short"]]]),
            id="compound-bad-arguments",
        ),
        pytest.param(
            raw_frame(codec.OP_COMPOUND, [[codec.OP_COMPOUND, []]]), id="compound-in-compound"
        ),
    ],
)
def test_bad_frames_after_the_handshake(tmp_path, brick_factory, garbage):
    brick = brick_factory()
    bad = raw_handshake(brick)
    bad.sendall(garbage)
    assert closed_by_brick(bad)
    port = bad.getsockname()[1]
    bad.close()
    _assert_brick_still_serves(tmp_path, brick)
    assert f"closing connection from 127.0.0.1:{port}" in brick.log_text()


def _assert_brick_still_serves(tmp_path: Path, brick: Brick) -> None:
    graph = client_graph(tmp_path, brick, name="after")

    async def main():
        async with graph.running():
            assert await graph.wait_up(WAIT)
            iatt = await graph.top.stat(ROOT_GFID)
            assert iatt.gfid == ROOT_GFID

    trio.run(main)
    assert brick.alive()


# --- brick failures -----------------------------------------------------------------------------


def test_brick_killed_and_restarted_the_client_recovers_and_open_files_work(
    tmp_path, brick_factory
):
    brick = brick_factory()
    graph = client_graph(tmp_path, brick)
    recorder = Recorder()

    async def main():
        async with graph.running():
            client = graph.top
            client.parents.append(recorder)
            assert await graph.wait_up(WAIT)
            fh, _ = await create_file(client, b"kept-open")
            await client.write(fh, 0, b"before the crash")

            brick.kill()
            await wait_for(lambda: not client.is_up)
            assert recorder.events[-1] == Event.CHILD_DOWN
            with pytest.raises(OSError) as down:
                await client.read(fh, 0, 100)
            assert down.value.errno == errno.ENOTCONN

            await trio.to_thread.run_sync(brick.restart)
            await wait_for(lambda: client.is_up)
            assert recorder.events[-1] == Event.CHILD_UP
            assert await client.read(fh, 0, 100) == b"before the crash"
            await client.write(fh, 16, b", and after")
            await client.release(fh)

    trio.run(main)
    assert (brick.directory / "kept-open").read_bytes() == b"before the crash, and after"


def test_ping_timeout_detects_a_brick_that_stops_answering(tmp_path, brick_factory, caplog):
    brick = brick_factory()
    graph = client_graph(tmp_path, brick, ping_timeout=1)

    async def main():
        async with graph.running():
            client = graph.top
            assert await graph.wait_up(WAIT)
            brick.pause()
            try:
                await wait_for(lambda: not client.is_up)
            finally:
                brick.resume()
            await wait_for(lambda: client.is_up)
            assert (await client.stat(ROOT_GFID)).gfid == ROOT_GFID

    trio.run(main)
    assert any("did not answer a ping" in r.getMessage() for r in caplog.records)


def test_locks_die_with_the_client_connection(tmp_path, brick_factory):
    brick = brick_factory()
    first = client_graph(tmp_path, brick, name="first")
    second = client_graph(tmp_path, brick, name="second")
    write_lock = Flock(fcntl.F_WRLCK, 0, 0, 1, b"owner-a")

    async def main():
        async with second.running():
            two = second.top
            assert await second.wait_up(WAIT)
            fh_two, gfid = await create_file(two, b"locked")
            granted = trio.Event()

            async def wait_for_lock() -> None:
                await two.inodelk("test", gfid, fcntl.F_SETLKW, Flock(fcntl.F_WRLCK, 0, 0, 2, b"b"))
                granted.set()

            async with trio.open_nursery() as nursery:
                async with first.running():
                    one = first.top
                    assert await first.wait_up(WAIT)
                    await one.inodelk("test", gfid, fcntl.F_SETLK, write_lock)
                    fh_one = await one.open(gfid, os.O_RDWR)
                    await one.lk(fh_one, fcntl.F_SETLK, write_lock)

                    probe = Flock(fcntl.F_WRLCK, 0, 10, 2, b"b")
                    conflict = await two.lk(fh_two, fcntl.F_GETLK, probe)
                    assert (conflict.type, conflict.owner) == (fcntl.F_WRLCK, b"owner-a")
                    with pytest.raises(OSError) as busy:
                        await two.inodelk("test", gfid, fcntl.F_SETLK, probe)
                    assert busy.value.errno == errno.EAGAIN

                    nursery.start_soon(wait_for_lock)
                    await trio.sleep(0.2)
                    assert not granted.is_set()
                # The first client's connection is closed here: its locks must go with it.
                with trio.fail_after(WAIT):
                    await granted.wait()
            free = await two.lk(fh_two, fcntl.F_GETLK, Flock(fcntl.F_WRLCK, 0, 0, 2, b"b"))
            assert free.type == fcntl.F_UNLCK
            await two.release(fh_two)

    trio.run(main)


# --- the daemon's command line --------------------------------------------------------------------


def _run_daemon(volfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GLUSTERPYD), "-f", str(volfile)], capture_output=True, text=True, timeout=WAIT
    )


def test_daemon_refuses_a_port_in_use_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        volfile = write_brick_volfile(tmp_path / "b.vol", tmp_path, port)
        done = _run_daemon(volfile)
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"glusterpyd: error: {volfile}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda text: text.replace("directory /", "directory /nonexistent/"), "does not exist"),
        (lambda text: text.replace("listen-port", "listen-prot"), "unknown option"),
        (lambda text: text.replace("auth.addr.brick", "auth.addr.other"), "names no subvolume"),
    ],
)
def test_daemon_start_errors_are_one_clear_line(tmp_path, edit, expected):
    volfile = write_brick_volfile(tmp_path / "b.vol", tmp_path, free_port())
    volfile.write_text(edit(volfile.read_text()))
    done = _run_daemon(volfile)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"glusterpyd: error: {volfile}") and expected in lines[-1]


def test_daemon_refuses_a_client_volfile(tmp_path):
    volfile = write_client_volfile(tmp_path / "c.vol", free_port())
    done = _run_daemon(volfile)
    assert done.returncode == 2
    assert "not protocol/server" in done.stderr and "Traceback" not in done.stderr


def test_daemon_runs_in_the_foreground_and_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    volfile = write_brick_volfile(tmp_path / "b.vol", tmp_path, port)
    pid_file = tmp_path / "brick.pid"
    command = [str(GLUSTERPYD), "-f", str(volfile), "--pid-file", str(pid_file)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        assert pid_file.read_text().strip() == str(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0
    assert out == ""
    assert f"listening on 127.0.0.1:{port}" in err and "stopping on SIGTERM" in err
    assert not pid_file.exists()


def test_many_waiting_locks_do_not_stall_other_fops_on_the_connection(tmp_path, brick_factory):
    brick = brick_factory()
    holder_graph = client_graph(tmp_path, brick, name="holder")
    waiter_graph = client_graph(tmp_path, brick, name="waiter")
    waiters = 300  # more than the brick's cap on ordinary requests in flight

    async def main():
        async with holder_graph.running(), waiter_graph.running():
            assert await holder_graph.wait_up(WAIT) and await waiter_graph.wait_up(WAIT)
            holder, waiter = holder_graph.top, waiter_graph.top
            lock = Flock(fcntl.F_WRLCK, 0, 0, 1, b"holder")
            await holder.inodelk("test", ROOT_GFID, fcntl.F_SETLK, lock)
            async with trio.open_nursery() as nursery:
                for i in range(waiters):
                    owner = Flock(fcntl.F_WRLCK, 0, 0, 2, b"waiter-%d" % i)
                    nursery.start_soon(waiter.inodelk, "test", ROOT_GFID, fcntl.F_SETLKW, owner)
                await trio.sleep(0.5)
                with trio.fail_after(WAIT):
                    assert (await waiter.stat(ROOT_GFID)).gfid == ROOT_GFID
                assert waiter.is_up
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert brick.alive()
