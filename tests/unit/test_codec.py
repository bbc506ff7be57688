"""The frame codec: every fop's arguments and results round-trip; bad frames are refused."""

from __future__ import annotations

import errno
import socket

import msgpack
import pytest
import trio

from glusterpy.rpc import codec
from glusterpy.rpc.connection import Connection
from glusterpy.xlator import FOPS, ROOT_GFID, DirEntry, Flock, Iatt, SetAttr, StatVfs

GFID = bytes(range(16))
IATT = Iatt(GFID, 0o100644, 1, 1000, 1000, 0, 5, 8, 4096, 1, 2, 3)
FLOCK = Flock(1, 0, 10, 42, b"owner", False)

ARGS = {
    "lookup": (ROOT_GFID, b"name", {"want": b"x"}),
    "stat": (GFID,),
    "fstat": (7,),
    "setattr": (GFID, SetAttr(mode=0o600, size=3), 9),
    "readlink": (GFID,),
    "statfs": (ROOT_GFID,),
    "mknod": (ROOT_GFID, b"fifo", 0o10644, 0, 0, 0, GFID),
    "mkdir": (ROOT_GFID, b"dir", 0o755, 0, 0, GFID),
    "symlink": (ROOT_GFID, b"sym", b"../target", 0, 0, GFID),
    "create": (ROOT_GFID, b"file", 0o1101, 0o644, 0, 0, GFID),
    "link": (GFID, ROOT_GFID, b"hard"),
    "unlink": (ROOT_GFID, b"file"),
    "rmdir": (ROOT_GFID, b"dir"),
    "rename": (ROOT_GFID, b"a", GFID, b"b", 1),
    "open": (GFID, 2),
    "read": (3, 4096, 131072),
    "write": (3, 0, b"payload bytes"),
    "flush": (3, b"owner"),
    "fsync": (3, True),
    "release": (3,),
    "opendir": (GFID,),
    "readdir": (4, 0, 100),
    "releasedir": (4,),
    "fsyncdir": (4, False),
    "getxattr": (GFID, "user.a"),
    "listxattr": (GFID,),
    "setxattr": (GFID, "user.a", b"\x00value", 0),
    "removexattr": (GFID, "user.a"),
    "xattrop": (GFID, "add-array", {"trusted.afr.c": bytes(12)}),
    "lk": (3, 6, FLOCK),
    "inodelk": ("replicate", GFID, 7, FLOCK),
    "entrylk": ("replicate", ROOT_GFID, None, "lock", b"owner"),
}

RESULTS = {
    "lookup": (IATT, {"content": b"abc"}),
    "stat": IATT,
    "fstat": IATT,
    "setattr": IATT,
    "readlink": b"../target",
    "statfs": StatVfs(4096, 4096, 100, 50, 40, 1000, 900, 900, 255),
    "mknod": IATT,
    "mkdir": IATT,
    "symlink": IATT,
    "create": (5, IATT),
    "link": IATT,
    "open": 11,
    "read": b"data read back",
    "write": 13,
    "opendir": 12,
    "readdir": [DirEntry(b"a", 1, IATT), DirEntry(b"b", 2, IATT)],
    "getxattr": b"value",
    "listxattr": ["user.a", "trusted.gfid"],
    "xattrop": {"trusted.afr.c": bytes(12)},
    "lk": FLOCK,
}


def wire(header: bytes) -> bytes:
    """What a header goes through on the wire: packed, then decoded again."""
    return codec.unpack_header(header)


def test_every_fop_has_a_signature():
    assert set(codec.SIGNATURES) == set(FOPS)
    assert set(ARGS) == set(FOPS)


@pytest.mark.parametrize("fop", FOPS)
def test_args_round_trip(fop):
    encoded, payload = codec.encode_args(fop, ARGS[fop])
    call_id, op, body = wire(codec.pack_header(77, codec.OP_BY_FOP[fop], encoded))
    assert (call_id, codec.fop_name(op)) == (77, fop)
    assert codec.decode_args(fop, body, payload) == ARGS[fop]


@pytest.mark.parametrize("fop", FOPS)
def test_results_round_trip(fop):
    result = RESULTS.get(fop)
    body, payload = codec.encode_result(fop, result)
    _, err, body = wire(codec.pack_header(1, 0, body))
    assert err == 0
    assert codec.decode_result(fop, body, payload) == result


def test_bulk_data_travels_as_payload_not_in_the_header():
    data = bytes(range(256)) * 512
    encoded, payload = codec.encode_args("write", (3, 0, data))
    assert payload is data
    assert len(codec.pack_header(1, codec.OP_BY_FOP["write"], encoded)) < 32
    body, payload = codec.encode_result("read", data)
    assert body is None and payload is data


@pytest.mark.parametrize(
    "fop, args, message",
    [
        ("stat", [b"short"], "16-byte gfid"),
        ("stat", [], "takes 1 arguments"),
        ("read", [1, 2, "3"], "an integer"),
        ("fsync", [1, 1], "a boolean"),
        ("setattr", [GFID, [1, 2], None], "6 fields"),
        ("lk", [1, 2, [1, 2, 3, 4, "owner", False]], "bytes"),
        ("xattrop", [GFID, "add-array", {"k": "not bytes"}], "bytes"),
        ("lookup", [GFID, b"n", {1: 2}], "string keys"),
        ("stat", "not a list", "argument list"),
    ],
)
def test_bad_arguments_are_refused(fop, args, message):
    with pytest.raises(codec.FrameError, match=message):
        codec.decode_args(fop, args, None)


def test_payload_only_where_the_fop_takes_one():
    with pytest.raises(codec.FrameError, match="payload"):
        codec.decode_args("stat", [GFID], bytearray(b"x"))
    with pytest.raises(codec.FrameError, match="payload"):
        codec.decode_result("stat", codec.encode_result("stat", IATT)[0], bytearray(b"x"))


def test_unknown_op_is_refused():
    with pytest.raises(codec.FrameError, match="unknown op"):
        codec.fop_name(len(FOPS))


@pytest.mark.parametrize(
    "header, message",
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2]), "3 items"),
        (msgpack.packb(["1", 2, None]), "not an integer"),
        (msgpack.packb([1, 2, None]) + b"\x00", "undecodable"),
    ],
)
def test_bad_headers_are_refused(header, message):
    with pytest.raises(codec.FrameError, match=message):
        codec.unpack_header(header)


@pytest.mark.parametrize(
    "prefix, message",
    [
        (b"XYZ" + bytes([1]) + (5).to_bytes(4, "big") + bytes(4), "bad magic"),
        (codec.MAGIC + bytes([9]) + (5).to_bytes(4, "big") + bytes(4), "frame kind"),
        (codec.pack_prefix(codec.REQUEST, 0, 0), "header length 0"),
        (codec.pack_prefix(codec.REQUEST, codec.MAX_HEADER + 1, 0), "header length"),
        (codec.pack_prefix(codec.REQUEST, 10, codec.MAX_PAYLOAD + 1), "payload length"),
    ],
)
def test_bad_prefixes_are_refused(prefix, message):
    with pytest.raises(codec.FrameError, match=message):
        codec.unpack_prefix(prefix)


# --- frames through a real socket pair --------------------------------------------------------


async def _exchange(raw: bytes, max_payload: int = codec.MAX_PAYLOAD):
    """Send raw bytes on one end of a socket pair, then read frames from the other."""
    left, right = trio.socket.socketpair()

    async def send_all() -> None:
        view = memoryview(raw)
        while view:
            view = view[await left.send(view) :]
        left.shutdown(socket.SHUT_WR)

    with left, right:
        conn = Connection(right, "pair", max_payload)
        frames = []
        problem = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            try:
                while (frame := await conn.receive()) is not None:
                    frames.append(frame)
            except codec.FrameError as e:
                problem = e
                nursery.cancel_scope.cancel()
        if problem is not None:
            raise problem
        return frames


def _frame(call_id: int, op: int, body, payload: bytes = b"") -> bytes:
    header = codec.pack_header(call_id, op, body)
    return codec.pack_prefix(codec.REQUEST, len(header), len(payload)) + header + payload


def test_frames_round_trip_through_a_socket():
    big = bytes(range(256)) * 4096 * 3  # 3 MiB: received straight into its own buffer
    raw = _frame(1, 5, [1]) + _frame(2, 16, [3, 0], big) + _frame(3, codec.OP_PING, None)
    frames = trio.run(_exchange, raw)
    assert [(f.call_id, f.second) for f in frames] == [(1, 5), (2, 16), (3, codec.OP_PING)]
    assert frames[1].payload == big
    assert frames[0].payload is None and frames[0].body == [1]


def test_frames_sent_by_connection_send_arrive_whole():
    async def main():
        left, right = trio.socket.socketpair()
        with left, right:
            sender, receiver = Connection(left, "l"), Connection(right, "r")
            data = b"\xab" * (1 << 20)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.send, codec.REPLY, codec.pack_header(9, 0, None), data)
                frame = await receiver.receive()
            return frame, data

    frame, data = trio.run(main)
    assert (frame.kind, frame.call_id, frame.second) == (codec.REPLY, 9, 0)
    assert frame.payload == data


@pytest.mark.parametrize("cut", [3, 12, 15])
def test_truncated_frame_is_an_error(cut):
    raw = _frame(1, 16, [3, 0], b"x" * 10)
    with pytest.raises(codec.FrameError, match="truncated"):
        trio.run(_exchange, raw[:cut])


def test_oversized_payload_is_refused_before_reading_it():
    prefix = codec.pack_prefix(codec.REQUEST, 4, 2048)
    with pytest.raises(codec.FrameError, match="payload length 2048 above the limit 1024"):
        trio.run(_exchange, prefix, 1024)


def test_garbage_is_refused():
    with pytest.raises(codec.FrameError, match="bad magic"):
        trio.run(_exchange, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_error_numbers_are_plain_integers_on_the_wire():
    _, err, body = wire(codec.pack_header(4, errno.ENOENT, None))
    assert (err, body) == (errno.ENOENT, None)


# --- compound requests --------------------------------------------------------------------------


def test_compound_round_trips_with_its_one_payload():
    data = b"spool" * 100
    calls = [("inodelk", ARGS["inodelk"]), ("xattrop", ARGS["xattrop"]), ("write", (3, 0, data))]
    body, payload = codec.encode_compound(calls)
    assert payload is data
    _, op, body = wire(codec.pack_header(5, codec.OP_COMPOUND, body))
    assert op == codec.OP_COMPOUND
    assert codec.decode_compound(body, payload) == calls

    fops = [fop for fop, _ in calls]
    answer, none = codec.encode_compound_result(fops, [None, RESULTS["xattrop"], len(data)])
    assert none is None
    _, _, answer = wire(codec.pack_header(5, 0, answer))
    assert codec.decode_compound_result(fops, answer, None) == [None, RESULTS["xattrop"], 500]


def test_compound_reply_ends_at_the_failed_fop():
    fops = ["inodelk", "xattrop", "write"]
    failed = OSError(errno.EAGAIN, "held by another owner")
    body, _ = codec.encode_compound_result(fops, [failed])
    assert body == [[errno.EAGAIN, None]]
    (got,) = codec.decode_compound_result(fops, wire(codec.pack_header(1, 0, body))[2], None)
    assert isinstance(got, OSError) and got.errno == errno.EAGAIN


def test_compound_read_answers_in_the_payload():
    body, payload = codec.encode_compound_result(["stat", "read"], [IATT, b"content"])
    assert payload == b"content"
    assert codec.decode_compound_result(["stat", "read"], body, payload) == [IATT, b"content"]


def test_compound_that_cannot_be_sent_is_a_value_error():
    with pytest.raises(ValueError, match="1 to"):
        codec.encode_compound([])
    with pytest.raises(ValueError, match="1 to"):
        codec.encode_compound([("stat", (GFID,))] * (codec.MAX_COMPOUND + 1))
    with pytest.raises(ValueError, match="bulk data"):
        codec.encode_compound([("write", (1, 0, b"a")), ("read", (1, 0, 1))])


@pytest.mark.parametrize(
    "body, payload, message",
    [
        ("not a list", None, "a list of fops"),
        ([], None, "1 to"),
        ([[codec.OP_BY_FOP["stat"], [GFID]]] * (codec.MAX_COMPOUND + 1), None, "1 to"),
        ([[codec.OP_BY_FOP["stat"]]], None, "pair"),
        ([[len(FOPS), []]], None, "unknown op"),
        ([[codec.OP_BY_FOP["stat"], [b"short"]]], None, "16-byte gfid"),
        ([[codec.OP_BY_FOP["stat"], [GFID]]], b"x", "payload no fop"),
        ([[codec.OP_BY_FOP["read"], [1, 0, 1]]] * 2, None, "more than one"),
        ([[codec.OP_COMPOUND, []]], None, "unknown op"),
    ],
)
def test_bad_compounds_are_refused(body, payload, message):
    with pytest.raises(codec.FrameError, match=message):
        codec.decode_compound(body, payload)


@pytest.mark.parametrize(
    "body, message",
    [
        ("nope", "a list of results"),
        ([], "answered 0"),
        ([[0, None]] * 3, "answered 3"),
        ([[errno.EIO, None], [0, None]], "went on after"),
        ([[0]], "pair"),
    ],
)
def test_bad_compound_replies_are_refused(body, message):
    with pytest.raises(codec.FrameError, match=message):
        codec.decode_compound_result(["inodelk", "inodelk"], body, None)
