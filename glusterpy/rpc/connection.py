"""One TCP connection that carries frames, shared by protocol/client and protocol/server.

Receiving reads into one preallocated buffer and parses frames out of it; a large payload is
received straight into its own bytearray, so bulk data is never copied twice. Sending writes
prefix, header and payload with one `sendmsg` (small frames are joined first, which is cheaper
than a second buffer in the kernel).

Invariants: one task receives at a time (the connection's reader); any number of tasks send,
one frame at a time under `_send_lock`. A send, once begun, is shielded from cancellation so a
frame is never cut in half; `close()` from another task wakes a blocked sender or receiver.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

import trio

from glusterpy.rpc import codec

log = logging.getLogger(__name__)

READ_BUFFER = 256 << 10
# Payloads at least this big are received directly into their own buffer.
DIRECT_RECEIVE = 64 << 10
# Below this, header and payload are joined into one bytes object before sending.
JOIN_BELOW = 16 << 10


class ConnectionLost(Exception):
    """The peer closed or reset the connection, or it was closed locally."""


@dataclass(slots=True)
class Frame:
    kind: int
    call_id: int
    second: int
    body: Any
    payload: bytearray | None


def set_nodelay(sock: trio.socket.SocketType, nodelay: bool) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))


class Connection:
    """Frames over one connected trio socket; `peer` is "host:port" for log lines."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        peer: str,
        max_payload: int = codec.MAX_PAYLOAD,
    ):
        self.sock = sock
        self.peer = peer
        self.max_payload = max_payload
        self._send_lock = trio.Lock()
        self._buf = bytearray(READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def close(self) -> None:
        self.sock.close()

    # --- sending ------------------------------------------------------------------------------

    async def send(self, kind: int, header: bytes, payload: Any = None) -> None:
        """Send one frame; raises ConnectionLost when the connection is gone."""
        size = 0 if payload is None else len(payload)
        prefix = codec.pack_prefix(kind, len(header), size)
        if size < JOIN_BELOW:
            buffers = [prefix + header + bytes(payload or b"")]
        else:
            buffers = [prefix + header, payload]
        async with self._send_lock:
            with trio.CancelScope(shield=True):
                try:
                    await self._send_all(buffers)
                except (OSError, trio.ClosedResourceError) as e:
                    raise ConnectionLost(f"sending to {self.peer} failed: {e}") from None

    async def _send_all(self, buffers: list[Any]) -> None:
        if len(buffers) == 1:
            sent = await self.sock.send(buffers[0])
            if sent == len(buffers[0]):
                return  # the common case: a small frame in one call
            buffers = [memoryview(buffers[0])[sent:]]
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        while views:
            sent = await self.sock.sendmsg(views)
            while sent:
                if sent >= len(views[0]):
                    sent -= len(views.pop(0))
                else:
                    views[0] = views[0][sent:]
                    sent = 0

    # --- receiving ----------------------------------------------------------------------------

    async def receive(self) -> Frame | None:
        """The next frame, or None when the peer closed cleanly between frames.

        Raises FrameError for a malformed, oversized or truncated frame, ConnectionLost when
        the connection fails.
        """
        if not await self._fill(codec.PREFIX.size, eof_ok=True):
            return None
        prefix = self._view[self._start : self._start + codec.PREFIX.size]
        kind, header_len, payload_len = codec.unpack_prefix(prefix, self.max_payload)
        self._start += codec.PREFIX.size

        if header_len <= len(self._buf):
            await self._fill(header_len)
            header = self._view[self._start : self._start + header_len]
            call_id, second, body = codec.unpack_header(header)
            header.release()
            self._start += header_len
        else:
            call_id, second, body = codec.unpack_header(await self._read_exact(header_len))

        payload = await self._read_exact(payload_len) if payload_len else None
        return Frame(kind, call_id, second, body, payload)

    async def _recv_into(self, target: memoryview) -> int:
        try:
            return await self.sock.recv_into(target)
        except (OSError, trio.ClosedResourceError) as e:
            raise ConnectionLost(f"receiving from {self.peer} failed: {e}") from None

    async def _fill(self, need: int, eof_ok: bool = False) -> bool:
        """Make at least `need` bytes available in the buffer; False on EOF with none."""
        if self._start + need > len(self._buf):
            buffered = self._end - self._start
            self._buf[:buffered] = self._view[self._start : self._end]
            self._start, self._end = 0, buffered
        while self._end - self._start < need:
            received = await self._recv_into(self._view[self._end :])
            if received == 0:
                if eof_ok and self._end == self._start:
                    return False
                raise codec.FrameError(
                    f"truncated frame: connection closed with {self._end - self._start} of "
                    f"{need} expected bytes"
                )
            self._end += received
        return True

    async def _read_exact(self, size: int) -> bytearray:
        """`size` bytes in a new bytearray: first what is buffered, then straight from the
        socket for large remainders."""
        data = bytearray(size)
        target = memoryview(data)
        have = min(self._end - self._start, size)
        target[:have] = self._view[self._start : self._start + have]
        self._start += have
        pos = have
        while pos < size:
            remaining = size - pos
            if remaining >= DIRECT_RECEIVE:
                received = await self._recv_into(target[pos:])
                if received == 0:
                    raise codec.FrameError(
                        f"truncated frame: connection closed {remaining} bytes short"
                    )
                pos += received
            else:
                await self._fill(remaining)
                target[pos:] = self._view[self._start : self._start + remaining]
                self._start += remaining
                pos = size
        return data
