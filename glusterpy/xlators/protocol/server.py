"""protocol/server: serves its subvolumes to protocol/client translators over TCP.

Every connection starts with a handshake naming the protocol version, the client's process
uuid and the subvolume it wants; the server checks the version and `auth.addr` (see
`protocol.auth`) and answers accept or a reason. After that each request runs in its own task,
so replies go back in whatever order they finish.

Invariants, per connection:
- handles: the client sees only handles this connection gave out; they map to the served
  subvolume's handles, and a handle of another connection is EBADF here.
- lock owners: every owner the client sends is prefixed with `<client id>:` before it goes
  down, and the prefix is stripped from answers, so owners of different clients never collide.
- when the connection ends (close, reset, malformed frame), its requests are cancelled, every
  handle it holds is released and `client_disconnect(client id)` goes down the graph, so its
  locks die with it. Nothing a client sends can stop the daemon.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
from dataclasses import replace
from typing import Any

import trio

from glusterpy.rpc import codec
from glusterpy.rpc.connection import Connection, ConnectionLost, Frame, set_nodelay
from glusterpy.volfile.options import Bool, Enum, Int, Option, Str, StrList
from glusterpy.xlator import Call, Flock, Translator
from glusterpy.xlators.protocol import auth

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 20.0
# Requests one connection may have running at once; the reader waits for a free slot, so a
# flood of requests slows its sender instead of growing the daemon without bound.
MAX_IN_FLIGHT = 256
# Lock requests may wait for a long time (blocking locks), so they count against a separate,
# larger cap: waiting locks must not keep the reader from answering pings and other fops.
MAX_LOCKS_IN_FLIGHT = 4096
LOCK_FOPS = frozenset({"lk", "inodelk", "entrylk"})
# Bulk bytes (write data received, read data to send) one connection may hold at once.
MAX_IN_FLIGHT_BYTES = 64 << 20
HANDLE_FOPS = frozenset(
    {"fstat", "read", "write", "flush", "fsync", "release", "readdir", "releasedir", "fsyncdir"}
    | {"lk"}
)


class Server(Translator):
    """Listens on one TCP address and serves each accepted, authenticated connection.

    `port` is the port actually bound once `start` has run (useful with listen-port 0).
    """

    type_name = "protocol/server"
    options_table = (
        Option("transport-type", Enum(("tcp", "socket")), "tcp", "only TCP is supported"),
        Option(
            "transport.socket.listen-port",
            Int(0, 65535),
            "6996",
            "TCP port to listen on; 0 picks a free port and logs it",
            aliases=("listen-port",),
        ),
        Option(
            "transport.socket.bind-address",
            Str(),
            "0.0.0.0",
            "address to listen on (0.0.0.0 = all IPv4 addresses, as GlusterFS does)",
            aliases=("bind-address",),
        ),
        Option("transport.socket.nodelay", Bool(), "on", "send small replies at once"),
        Option("transport.socket.keepalive", Bool(), "on", "TCP keepalive on connections"),
        Option("transport.socket.listen-backlog", Int(1, 65535), "128", "listen(2) backlog"),
        Option("auth.addr.*.allow", StrList(), None, "addresses allowed to use a subvolume"),
        Option("auth.addr.*.reject", StrList(), None, "addresses refused (checked first)"),
    )

    def __init__(self, name: str, children: list[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        if not children:
            raise ValueError("protocol/server needs at least one subvolume to serve")
        self.subvolumes = {child.name: child for child in children}
        for key in options:
            parts = key.split(".")
            if key.startswith("auth.addr.") and ".".join(parts[2:-1]) not in self.subvolumes:
                raise ValueError(
                    f"option '{key}' names no subvolume of this server "
                    f"(subvolumes: {', '.join(self.subvolumes)})"
                )
        self.host = options["transport.socket.bind-address"]
        self.port = options["transport.socket.listen-port"]
        self._serial = itertools.count(1)
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        listener = await self._listen()
        self.port = listener.getsockname()[1]
        log.info("%s: listening on %s:%d", self.name, self.host, self.port)
        nursery.start_soon(self._accept_loop, listener)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            with trio.move_on_after(10):
                await self._stopped.wait()

    async def _listen(self) -> trio.socket.SocketType:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await listener.bind((self.host, self.port))
            listener.listen(self.options["transport.socket.listen-backlog"])
        except OSError as e:
            listener.close()
            detail = e.strerror or str(e)
            raise OSError(e.errno, f"cannot listen on {self.host}:{self.port}: {detail}") from None
        return listener

    async def _accept_loop(self, listener: trio.socket.SocketType) -> None:
        try:
            with listener:
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    while True:
                        try:
                            sock, address = await listener.accept()
                        except OSError as e:
                            # Out of descriptors or similar: wait a little, keep serving others.
                            log.warning("%s: accept failed: %s", self.name, e)
                            await trio.sleep(0.1)
                            continue
                        nursery.start_soon(self._serve_connection, sock, address)
        finally:
            self._stopped.set()

    def _configure(self, sock: trio.socket.SocketType) -> None:
        set_nodelay(sock, self.options["transport.socket.nodelay"])
        keepalive = int(self.options["transport.socket.keepalive"])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive)

    async def _serve_connection(self, sock: trio.socket.SocketType, address: Any) -> None:
        peer = f"{address[0]}:{address[1]}"
        conn = Connection(sock, peer)
        try:
            self._configure(sock)
            session = await self._handshake(conn, address[0])
            if session is not None:
                await session.run()
        except codec.FrameError as e:
            log.warning("%s: closing connection from %s: %s", self.name, peer, e)
        except (ConnectionLost, OSError) as e:
            log.info("%s: connection from %s lost during handshake: %s", self.name, peer, e)
        finally:
            conn.close()

    async def _handshake(self, conn: Connection, host: str) -> Session | None:
        frame = None
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            frame = await conn.receive()
        if frame is None:
            return None
        if frame.kind != codec.REQUEST or frame.second != codec.OP_HANDSHAKE:
            raise codec.FrameError("the first request is not a handshake")
        hello = frame.body
        if type(hello) is not dict or frame.payload is not None:
            raise codec.FrameError("handshake arguments are not a map")
        version, uuid, subvolume = (hello.get(k) for k in ("version", "uuid", "subvolume"))
        if type(version) is not int or type(uuid) is not str or type(subvolume) is not str:
            raise codec.FrameError("handshake lacks version, uuid or subvolume")

        err, reason = self._refusal(version, subvolume, host)
        if err:
            log.warning("%s: refused client %s (%s): %s", self.name, conn.peer, uuid, reason)
            await conn.send(codec.REPLY, codec.pack_header(frame.call_id, err, reason))
            return None
        client_id = f"{uuid}-{next(self._serial)}"
        accept = {"version": codec.PROTOCOL_VERSION, "client-id": client_id}
        await conn.send(codec.REPLY, codec.pack_header(frame.call_id, 0, accept))
        return Session(self, conn, client_id, self.subvolumes[subvolume])

    def _refusal(self, version: int, subvolume: str, host: str) -> tuple[int, str]:
        if version != codec.PROTOCOL_VERSION:
            reason = (
                f"protocol version {version} is not supported "
                f"(this server speaks version {codec.PROTOCOL_VERSION})"
            )
            return errno.EPROTONOSUPPORT, reason
        if subvolume not in self.subvolumes:
            return errno.ENOENT, f"no subvolume named {subvolume} is served here"
        reason = auth.check_address(self.options, subvolume, host)
        if reason is not None:
            return errno.EACCES, f"authentication failed for subvolume {subvolume}: {reason}"
        return 0, ""


class ByteBudget:
    """Counts bytes in use against a limit; `take` waits until enough are given back."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._freed = trio.Event()

    async def take(self, size: int) -> int:
        size = min(size, self.limit)  # one huge request must still be able to run
        while self.used + size > self.limit:
            await self._freed.wait()
        self.used += size
        return size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.set()
        self._freed = trio.Event()


class Session:
    """One accepted connection: its handle table, its lock-owner prefix, its running requests."""

    def __init__(self, server: Server, conn: Connection, client_id: str, target: Translator):
        self.server = server
        self.conn = conn
        self.client_id = client_id
        self.target = target
        self.owner_prefix = client_id.encode() + b":"
        self.handles: dict[int, tuple[int, bool]] = {}
        self._next_handle = itertools.count(1)
        self._slots = trio.Semaphore(MAX_IN_FLIGHT)
        self._lock_slots = trio.Semaphore(MAX_LOCKS_IN_FLIGHT)
        self._bytes = ByteBudget(MAX_IN_FLIGHT_BYTES)

    async def run(self) -> None:
        name, peer = self.server.name, self.conn.peer
        log.info("%s: client %s connected from %s to %s", name, self.client_id, peer, self.target)
        reason = "closed by the client"
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._read_requests(nursery)
                except codec.FrameError as e:
                    reason = f"malformed frame: {e}"
                    log.warning("%s: closing connection from %s: %s", name, peer, e)
                except ConnectionLost as e:
                    reason = str(e)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._clean_up()
            log.info("%s: client %s from %s disconnected: %s", name, self.client_id, peer, reason)

    async def _read_requests(self, nursery: trio.Nursery) -> None:
        while True:
            frame = await self.conn.receive()
            if frame is None:
                return
            if frame.kind != codec.REQUEST:
                raise codec.FrameError("a reply frame sent to the server")
            if frame.second == codec.OP_PING:
                await self.conn.send(codec.REPLY, codec.pack_header(frame.call_id, 0, None))
                continue
            if frame.second == codec.OP_COMPOUND:
                calls = codec.decode_compound(frame.body, frame.payload)
            else:
                fop = codec.fop_name(frame.second)
                calls = [(fop, codec.decode_args(fop, frame.body, frame.payload))]
            locking = any(fop in LOCK_FOPS for fop, _ in calls)
            slots = self._lock_slots if locking else self._slots
            await slots.acquire()
            size = len(frame.payload) if frame.payload is not None else 0
            size += sum(max(args[2], 0) for fop, args in calls if fop == "read")
            size = await self._bytes.take(size)
            nursery.start_soon(self._answer, frame, calls, slots, size)

    async def _answer(
        self, frame: Frame, calls: list[Call], slots: trio.Semaphore, size: int
    ) -> None:
        """Run one request (a fop, or a compound's fops in order) and send its reply."""
        payload = None
        compound = frame.second == codec.OP_COMPOUND
        fop = "compound" if compound else calls[0][0]
        try:
            if compound:
                body, payload = await self._run_compound(calls)
            else:
                body, payload = codec.encode_result(fop, await self._dispatch(*calls[0]))
            header = codec.pack_header(frame.call_id, 0, body)
            if len(header) > codec.MAX_HEADER:
                # The client would refuse such a frame and drop the whole connection.
                log.error(
                    "%s: %s answer of %d bytes is too large", self.server.name, fop, len(header)
                )
                header, payload = codec.pack_header(frame.call_id, errno.E2BIG, None), None
        except OSError as e:
            header = codec.pack_header(frame.call_id, e.errno or errno.EIO, None)
        except Exception as e:
            log.error("%s: %s from %s failed: %r", self.server.name, fop, self.conn.peer, e)
            log.debug("%s: traceback of the failed %s", self.server.name, fop, exc_info=True)
            header = codec.pack_header(frame.call_id, errno.EIO, None)
        finally:
            slots.release()
        try:
            await self.conn.send(codec.REPLY, header, payload)
        except ConnectionLost:
            pass
        finally:
            self._bytes.give(size)

    async def _run_compound(self, calls: list[Call]) -> tuple[Any, Any]:
        results: list[Any] = []
        for fop, args in calls:
            try:
                results.append(await self._dispatch(fop, args))
            except OSError as e:
                results.append(e)
                break
        return codec.encode_compound_result([fop for fop, _ in calls], results)

    # --- translating one request for the subvolume ----------------------------------------

    def _child_handle(self, fh: int) -> int:
        try:
            return self.handles[fh][0]
        except KeyError:
            raise OSError(errno.EBADF, f"handle {fh} is not open on this connection") from None

    def _add_handle(self, child_fh: int, is_dir: bool) -> int:
        fh = next(self._next_handle)
        self.handles[fh] = (child_fh, is_dir)
        return fh

    def _own(self, owner: bytes) -> bytes:
        return self.owner_prefix + owner

    def _own_lock(self, lock: Flock) -> Flock:
        return replace(lock, owner=self._own(lock.owner))

    @staticmethod
    def _strip_owner(lock: Flock) -> Flock:
        # A conflicting lock may belong to any client: drop whichever client prefix it has.
        _, sep, owner = lock.owner.partition(b":")
        return replace(lock, owner=owner) if sep else lock

    async def _dispatch(self, fop: str, args: tuple[Any, ...]) -> Any:
        target = self.target
        if fop in HANDLE_FOPS:
            fh = args[0]
            args = (self._child_handle(fh), *args[1:])
            if fop in ("release", "releasedir"):
                del self.handles[fh]
        if fop == "setattr" and args[2] is not None:
            args = (args[0], args[1], self._child_handle(args[2]))
        elif fop == "flush":
            args = (args[0], self._own(args[1]))
        elif fop == "lk":
            lock = await target.lk(args[0], args[1], self._own_lock(args[2]))
            return self._strip_owner(lock)
        elif fop == "inodelk":
            args = (*args[:3], self._own_lock(args[3]))
        elif fop == "entrylk":
            args = (*args[:4], self._own(args[4]))

        result = await getattr(target, fop)(*args)

        if fop in ("open", "opendir"):
            return self._add_handle(result, fop == "opendir")
        if fop == "create":
            return self._add_handle(result[0], False), result[1]
        return result

    async def _clean_up(self) -> None:
        """Release what the client left open and tell the graph it is gone."""
        handles, self.handles = self.handles, {}
        for child_fh, is_dir in handles.values():
            try:
                if is_dir:
                    await self.target.releasedir(child_fh)
                else:
                    await self.target.release(child_fh)
            except Exception as e:
                log.warning("%s: releasing a handle of %s failed: %r", self.server.name, self, e)
        try:
            await self.server.client_disconnect(self.client_id)
        except Exception:
            log.exception("%s: client_disconnect(%s) failed", self.server.name, self.client_id)

    def __repr__(self) -> str:
        return f"<client {self.client_id} from {self.conn.peer}>"
