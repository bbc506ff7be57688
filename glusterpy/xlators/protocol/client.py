"""protocol/client: one brick's subvolume, reached over TCP, as a translator.

The client keeps one connection to its brick. Every fop is a request frame with a call id;
many are in flight at once and their replies may come back in any order. A background task
(in the graph's nursery) connects, handshakes, reads replies, pings the brick, and when the
connection is lost reconnects with backoff, forever.

Invariants:
- `is_up` is True only between an accepted handshake (with handles re-opened) and the loss
  of that connection; CHILD_UP and CHILD_DOWN are emitted on exactly those transitions (and
  one CHILD_DOWN when the first connection attempt fails, so parents learn the state).
- While down, every fop fails at once with ENOTCONN; calls in flight when the connection dies
  fail with ENOTCONN.
- Handles given to callers are the client's own; they survive reconnection: after a
  reconnect each is re-opened on the brick by gfid (and open flags), and one that cannot be
  re-opened answers EBADF until released. Locks held on the brick are not re-acquired.
"""

from __future__ import annotations

import errno
import inspect
import itertools
import logging
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from glusterpy.rpc import codec
from glusterpy.rpc.connection import Connection, ConnectionLost, set_nodelay
from glusterpy.volfile.options import Bool, Enum, Float, Int, Option, Str
from glusterpy.xlator import FOPS, Call, Event, Translator, error

log = logging.getLogger(__name__)

# One identity per client process, as GlusterFS's process-uuid; the server adds a serial.
PROCESS_UUID = str(uuid.uuid4())
MIN_BACKOFF = 0.1
MAX_BACKOFF = 3.0
MAX_PING_INTERVAL = 10.0
HANDLE_ARG_FOPS = frozenset(
    {"fstat", "read", "write", "flush", "fsync", "readdir", "fsyncdir", "lk"}
)
# Fops that give up a handle the client keeps track of, so a compound cannot carry them.
RELEASE_FOPS = frozenset({"release", "releasedir"})
REOPEN_DROPS = os.O_CREAT | os.O_EXCL | os.O_TRUNC


class Refused(Exception):
    """The brick answered the handshake with a refusal; the message is its reason."""


@dataclass(slots=True)
class _Call:
    done: trio.Event
    err: int = 0
    body: Any = None
    payload: Any = None


@dataclass(slots=True)
class _Handle:
    """A handle given to a caller: what it is (to re-open it) and its brick handle."""

    gfid: bytes
    flags: int
    is_dir: bool
    remote: int | None
    generation: int


class Client(Translator):
    """The brick `remote-subvolume` at `remote-host:remote-port`."""

    type_name = "protocol/client"
    options_table = (
        Option("transport-type", Enum(("tcp", "socket")), "tcp", "only TCP is supported"),
        Option("remote-host", Str(), None, "brick host name or address", required=True),
        Option(
            "remote-port",
            Int(1, 65535),
            "6996",
            "brick TCP port",
            aliases=("transport.remote-port", "transport.socket.remote-port"),
        ),
        Option(
            "remote-subvolume",
            Str(),
            None,
            "the brick volume to attach to (a subvolume of its protocol/server)",
            required=True,
        ),
        Option(
            "ping-timeout",
            Float(0.05, 1013),
            "42",
            "seconds a brick may leave a ping unanswered before it is declared down",
        ),
        Option("frame-timeout", Float(1, 86400), "1800", "seconds a fop may wait for its reply"),
        Option("transport.socket.nodelay", Bool(), "on", "send small requests at once"),
    )

    def __init__(self, name: str, children: list[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self.host = options["remote-host"]
        self.port = options["remote-port"]
        self.subvolume = options["remote-subvolume"]
        self.ping_timeout = options["ping-timeout"]
        self.frame_timeout = options["frame-timeout"]
        self.brick = f"{self.host}:{self.port}"
        self.is_up = False
        self._announced: bool | None = None
        self._conn: Connection | None = None
        self._generation = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, _Call] = {}
        self._handles: dict[int, _Handle] = {}
        self._next_handle = itertools.count(1)
        # Files this client ever sent a POSIX lock request for (see _no_locks_to_drop).
        self._locked_gfids: set[bytes] = set()
        self._scope: trio.CancelScope | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        self._scope = trio.CancelScope()
        nursery.start_soon(self._run)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self._conn is not None:
            self._conn.close()

    def _announce(self, up: bool) -> None:
        if self._announced is up:
            return
        self._announced = up
        self.emit(Event.CHILD_UP if up else Event.CHILD_DOWN)

    async def _run(self) -> None:
        assert self._scope is not None
        with self._scope:
            delay = MIN_BACKOFF
            last_problem = None
            while True:
                try:
                    conn = await self._connect()
                except Refused as e:
                    problem = f"brick {self.brick} refused us: {e}"
                except trio.TooSlowError:
                    problem = f"brick {self.brick} did not answer within {self.ping_timeout} s"
                except (OSError, ConnectionLost, codec.FrameError) as e:
                    why = _describe(e)
                    problem = f"cannot connect to brick {self.brick} ({self.subvolume}): {why}"
                else:
                    last_problem = None
                    delay = MIN_BACKOFF
                    await self._serve(conn)
                    continue
                # Say what is wrong once per streak of failures, not once per retry.
                if problem != last_problem:
                    log.warning("%s: %s", self.name, problem)
                    last_problem = problem
                self._announce(False)
                await trio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _connect(self) -> Connection:
        """A connection whose handshake the brick accepted."""
        with trio.fail_after(self.ping_timeout):
            stream = await trio.open_tcp_stream(self.host, self.port)
            conn = Connection(stream.socket, self.brick)
            try:
                set_nodelay(stream.socket, self.options["transport.socket.nodelay"])
                await self._handshake(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    async def _handshake(self, conn: Connection) -> None:
        hello = {"version": codec.PROTOCOL_VERSION, "uuid": PROCESS_UUID}
        hello["subvolume"] = self.subvolume
        await conn.send(codec.REQUEST, codec.pack_header(0, codec.OP_HANDSHAKE, hello))
        frame = await conn.receive()
        if frame is None:
            raise ConnectionLost("the brick closed the connection during the handshake")
        if frame.kind != codec.REPLY or frame.call_id != 0:
            raise codec.FrameError("the brick's handshake answer is not a reply")
        if frame.second != 0:
            raise Refused(str(frame.body))

    async def _serve(self, conn: Connection) -> None:
        """Use one accepted connection until it is lost."""
        self._generation += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_replies, conn, nursery.cancel_scope)
                nursery.start_soon(self._ping, conn, nursery.cancel_scope)
                self._conn = conn
                await self._reopen_handles(conn)
                self.is_up = True
                log.info("%s: connected to brick %s (%s)", self.name, self.brick, self.subvolume)
                self._announce(True)
        finally:
            was_up, self.is_up, self._conn = self.is_up, False, None
            conn.close()
            self._fail_pending()
            # A cancelled task here means the graph is stopping, which is not worth a warning.
            stopping = trio.current_effective_deadline() == -math.inf
            if was_up:
                level = logging.INFO if stopping else logging.WARNING
                log.log(level, "%s: lost brick %s (%s)", self.name, self.brick, self.subvolume)
            self._announce(False)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for call in pending.values():
            call.err = errno.ENOTCONN
            call.done.set()

    async def _read_replies(self, conn: Connection, scope: trio.CancelScope) -> None:
        try:
            while True:
                frame = await conn.receive()
                if frame is None:
                    log.info("%s: brick %s closed the connection", self.name, self.brick)
                    break
                if frame.kind != codec.REPLY:
                    raise codec.FrameError("the brick sent a request")
                call = self._pending.pop(frame.call_id, None)
                if call is None:
                    continue  # its caller gave up (cancelled or timed out)
                call.err, call.body, call.payload = frame.second, frame.body, frame.payload
                call.done.set()
        except codec.FrameError as e:
            log.warning("%s: bad frame from brick %s: %s", self.name, self.brick, e)
        except ConnectionLost as e:
            log.info("%s: %s", self.name, e)
        finally:
            scope.cancel()

    async def _ping(self, conn: Connection, scope: trio.CancelScope) -> None:
        interval = min(self.ping_timeout / 2, MAX_PING_INTERVAL)
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(self.ping_timeout) as waited:
                try:
                    await self._roundtrip(conn, codec.OP_PING, None, None)
                except OSError:
                    break
            if waited.cancelled_caught:
                log.warning(
                    "%s: brick %s did not answer a ping within %s s; disconnecting",
                    self.name,
                    self.brick,
                    self.ping_timeout,
                )
                break
        scope.cancel()

    async def _reopen_handles(self, conn: Connection) -> None:
        for fh, handle in list(self._handles.items()):
            fop = "opendir" if handle.is_dir else "open"
            args = (handle.gfid,) if handle.is_dir else (handle.gfid, handle.flags & ~REOPEN_DROPS)
            try:
                handle.remote = await self._call_on(conn, fop, args)
                handle.generation = self._generation
            except OSError as e:
                handle.remote = None
                log.warning(
                    "%s: cannot re-open handle %d (gfid %s) on brick %s: %s",
                    self.name,
                    fh,
                    handle.gfid.hex(),
                    self.brick,
                    e,
                )

    # --- calls --------------------------------------------------------------------------------

    async def _roundtrip(self, conn: Connection, op: int, args: Any, payload: Any) -> _Call:
        call_id = next(self._ids)
        header = codec.pack_header(call_id, op, args)
        if len(header) > codec.MAX_HEADER:
            raise error(errno.E2BIG, f"request header of {len(header)} bytes is too large")
        call = _Call(trio.Event())
        self._pending[call_id] = call
        try:
            await conn.send(codec.REQUEST, header, payload)
            await call.done.wait()
        except ConnectionLost:
            raise error(errno.ENOTCONN, f"brick {self.brick}") from None
        finally:
            self._pending.pop(call_id, None)
        return call

    async def _call_on(self, conn: Connection, fop: str, args: tuple[Any, ...]) -> Any:
        encoded, payload = codec.encode_args(fop, args)

        def decode(call: _Call) -> Any:
            return codec.decode_result(fop, call.body, call.payload)

        return await self._request(conn, fop, codec.OP_BY_FOP[fop], encoded, payload, decode)

    async def _request(
        self,
        conn: Connection,
        what: str,
        op: int,
        encoded: Any,
        payload: Any,
        decode: Callable[[_Call], Any],
    ) -> Any:
        """One request and its decoded answer, within the frame timeout."""
        if payload is not None and len(payload) > conn.max_payload:
            raise error(errno.EINVAL, f"{what} of {len(payload)} bytes is too large")
        with trio.move_on_after(self.frame_timeout):
            call = await self._roundtrip(conn, op, encoded, payload)
            if call.err:
                raise error(call.err)
            try:
                return decode(call)
            except codec.FrameError as e:
                log.error("%s: bad %s reply from brick %s: %s", self.name, what, self.brick, e)
                raise error(errno.EIO, "bad reply") from None
        log.warning("%s: %s to brick %s timed out", self.name, what, self.brick)
        raise error(errno.ETIMEDOUT, f"{what} to brick {self.brick}")

    def _connected(self) -> Connection:
        conn = self._conn
        if not self.is_up or conn is None:
            raise error(errno.ENOTCONN, f"brick {self.brick} is down")
        return conn

    async def _call(self, fop: str, args: tuple[Any, ...]) -> Any:
        return await self._call_on(self._connected(), fop, args)

    async def compound(self, calls: Sequence[Call]) -> list[Any]:
        """The fops in one request to the brick, which runs them in order.

        Releases drop state here before they are sent, so a compound with one of them runs
        fop by fop instead.
        """
        if any(fop in RELEASE_FOPS for fop, _ in calls):
            return await super().compound(calls)
        outgoing: list[Call] = []
        refused = None
        for fop, args in calls:
            try:
                outgoing.append((fop, self._outgoing(fop, args)))
            except OSError as exc:
                refused = exc  # as the brick would: the calls before it run, none after
                break
        results = await self._compound(outgoing) if outgoing else []
        results = [
            r if isinstance(r, OSError) else self._incoming(fop, args, r)
            for (fop, args), r in zip(outgoing, results, strict=False)
        ]
        if refused is not None and len(results) == len(outgoing) and not _failed(results):
            results.append(refused)
        return results

    async def _compound(self, calls: list[Call]) -> list[Any]:
        fops = [fop for fop, _ in calls]
        encoded, payload = codec.encode_compound(calls)

        def decode(call: _Call) -> list[Any]:
            return codec.decode_compound_result(fops, call.body, call.payload)

        conn = self._connected()
        return await self._request(conn, "compound", codec.OP_COMPOUND, encoded, payload, decode)

    def _remote(self, fh: int) -> int:
        handle = self._handles.get(fh)
        if handle is None or handle.remote is None or handle.generation != self._generation:
            raise error(errno.EBADF, f"handle {fh} is not open on brick {self.brick}")
        return handle.remote

    def _no_locks_to_drop(self, fh: int) -> bool:
        """Whether a flush of `fh` may stay here: on the brick a flush only drops the POSIX
        locks its owner holds on the file, and this client never sent a lock on it."""
        self._remote(fh)  # EBADF for a handle the brick does not have, as the brick would
        return self._handles[fh].gfid not in self._locked_gfids

    def _keep(self, gfid: bytes, flags: int, is_dir: bool, remote: int) -> int:
        fh = next(self._next_handle)
        self._handles[fh] = _Handle(gfid, flags, is_dir, remote, self._generation)
        return fh

    def _outgoing(self, fop: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """A fop's arguments as the brick knows them: our handles replaced by the brick's."""
        if fop == "read" and args[2] > codec.MAX_PAYLOAD:
            raise error(errno.EINVAL, f"read of {args[2]} bytes is too large")
        if fop in HANDLE_ARG_FOPS:
            return (self._remote(args[0]), *args[1:])
        if fop == "setattr" and args[2] is not None:
            return (args[0], args[1], self._remote(args[2]))
        return args

    async def _fop(self, fop: str, args: tuple[Any, ...]) -> Any:
        if fop in ("release", "releasedir"):
            return await self._release(fop, args[0])
        if fop == "lk" and args[0] in self._handles:
            self._locked_gfids.add(self._handles[args[0]].gfid)
        elif fop == "flush" and self._no_locks_to_drop(args[0]):
            return None
        args = self._outgoing(fop, args)

        return self._incoming(fop, args, await self._call(fop, args))

    def _incoming(self, fop: str, args: tuple[Any, ...], result: Any) -> Any:
        """A fop's result as the caller knows it: the brick's new handles replaced by ours."""
        if fop == "open":
            return self._keep(args[0], args[1], False, result)
        if fop == "opendir":
            return self._keep(args[0], 0, True, result)
        if fop == "create":
            return self._keep(result[1].gfid, args[2], False, result[0]), result[1]
        return result

    async def _release(self, fop: str, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            raise error(errno.EBADF, f"handle {fh} is not open")
        if handle.remote is None or handle.generation != self._generation or not self.is_up:
            return  # the brick dropped it with the old connection
        try:
            await self._call(fop, (handle.remote,))
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise


def _failed(results: list[Any]) -> bool:
    return bool(results) and isinstance(results[-1], OSError)


def _describe(e: BaseException) -> str:
    """A connection failure in words; trio hides the reason of a refused connect in a group."""
    cause = e.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def _make_fop(name: str) -> Any:
    """A Client method for fop `name` that fills in the interface's defaults and sends it."""
    signature = inspect.signature(getattr(Translator, name))
    arity = len(signature.parameters) - 1

    async def fop(self: Client, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != arity:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            args = bound.args[1:]
        return await self._fop(name, args)

    fop.__name__ = fop.__qualname__ = name
    fop.__doc__ = getattr(Translator, name).__doc__
    return fop


for _name in FOPS:
    setattr(Client, _name, _make_fop(_name))
