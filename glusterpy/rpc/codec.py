"""The wire format between protocol/client and protocol/server: frames, and fops inside them.

A frame is a fixed 12-byte prefix, a msgpack header and an optional raw payload:

    prefix   magic b"GPf" (3 bytes), kind (1 byte: REQUEST or REPLY),
             header length (u32, big-endian), payload length (u32, big-endian)
    header   request: [call id, op, args]      reply: [call id, errno, result]
    payload  bulk data (a write's data, a read's answer), never copied into msgpack

`op` is a fop's index in `glusterpy.xlator.FOPS`, or OP_HANDSHAKE / OP_PING / OP_COMPOUND. A
reply with errno 0 carries the fop's result; otherwise the result is a detail string or nil.

A compound request runs several fops in order on the brick in one round trip (replicate's lock
+ pre-op, and post-op + unlock). Its args are a list of [op, args] pairs, at most MAX_COMPOUND;
its reply's result is a list of [errno, result] pairs, one per fop that ran, ending at the first
that failed. At most one fop of a compound moves bulk data (a write's data or a read's answer),
so the frame's single payload is that fop's.

Invariants: every length is checked against MAX_HEADER / MAX_PAYLOAD before anything is
allocated, and every decoded value is type-checked against the fop's declaration, so a
malformed frame raises `FrameError` here and never reaches a translator. This module knows
frames and fops, not translators or sockets.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable
from typing import Any

import msgpack

from glusterpy.xlator import FOPS, GFID_SIZE, DirEntry, Flock, Iatt, SetAttr, StatVfs

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAGIC = b"GPf"
PREFIX = struct.Struct(">3sBII")
REQUEST = 1
REPLY = 2
# A readdir of a few thousand entries fits easily; a header is never bulk data.
MAX_HEADER = 4 << 20
# FUSE sends at most 1 MiB per request; 16 MiB leaves room for large internal transfers.
MAX_PAYLOAD = 16 << 20

OP_HANDSHAKE = 200
OP_PING = 201
OP_COMPOUND = 202
MAX_COMPOUND = 32
FOP_BY_OP = dict(enumerate(FOPS))
OP_BY_FOP = {name: op for op, name in FOP_BY_OP.items()}


class FrameError(Exception):
    """A frame that breaks the protocol; the connection that sent it must be closed."""


# --- value kinds ------------------------------------------------------------------------------
# Each kind has an encoder (Python value -> msgpack-able value) and a decoder that checks the
# type of what arrived and rebuilds the Python value. DATA marks the one value per call that
# travels as the frame's payload.

DATA = "data"


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check(ok: bool, what: str, value: Any) -> None:
    if not ok:
        raise FrameError(f"expected {what}, got {type(value).__name__}")


def _dec_int(value: Any) -> int:
    _check(_is_int(value), "an integer", value)
    return value


def _dec_opt_int(value: Any) -> int | None:
    _check(value is None or _is_int(value), "an integer or nil", value)
    return value


def _dec_bool(value: Any) -> bool:
    _check(type(value) is bool, "a boolean", value)
    return value


def _dec_bytes(value: Any) -> bytes:
    _check(type(value) is bytes, "bytes", value)
    return value


def _dec_opt_bytes(value: Any) -> bytes | None:
    _check(value is None or type(value) is bytes, "bytes or nil", value)
    return value


def _dec_str(value: Any) -> str:
    _check(type(value) is str, "a string", value)
    return value


def _dec_gfid(value: Any) -> bytes:
    _check(type(value) is bytes and len(value) == GFID_SIZE, "a 16-byte gfid", value)
    return value


def _dec_list(value: Any, size: int, what: str) -> list[Any]:
    _check(type(value) is list and len(value) == size, what, value)
    return value


def _dec_xdata(value: Any) -> dict[str, Any] | None:
    _check(value is None or type(value) is dict, "a map or nil", value)
    if value is not None:
        for key in value:
            _check(type(key) is str, "string keys", key)
    return value


def _dec_xattrs(value: Any) -> dict[str, bytes]:
    _check(type(value) is dict, "a map", value)
    for key, item in value.items():
        _dec_str(key)
        _dec_bytes(item)
    return value


def _dec_strlist(value: Any) -> list[str]:
    _check(type(value) is list, "a list", value)
    for item in value:
        _dec_str(item)
    return value


def _enc_iatt(iatt: Iatt) -> list[Any]:
    return [
        iatt.gfid,
        iatt.mode,
        iatt.nlink,
        iatt.uid,
        iatt.gid,
        iatt.rdev,
        iatt.size,
        iatt.blocks,
        iatt.blksize,
        iatt.atime_ns,
        iatt.mtime_ns,
        iatt.ctime_ns,
    ]


def _dec_iatt(value: Any) -> Iatt:
    fields = _dec_list(value, 12, "an iatt of 12 fields")
    _dec_gfid(fields[0])
    for item in fields[1:]:
        _dec_int(item)
    return Iatt(*fields)


def _enc_setattr(attr: SetAttr) -> list[Any]:
    return [attr.mode, attr.uid, attr.gid, attr.size, attr.atime_ns, attr.mtime_ns]


def _dec_setattr(value: Any) -> SetAttr:
    fields = _dec_list(value, 6, "a setattr of 6 fields")
    return SetAttr(*(_dec_opt_int(item) for item in fields))


def _enc_flock(lock: Flock) -> list[Any]:
    return [lock.type, lock.start, lock.length, lock.pid, lock.owner, lock.flock]


def _dec_flock(value: Any) -> Flock:
    fields = _dec_list(value, 6, "a lock of 6 fields")
    for item in fields[:4]:
        _dec_int(item)
    return Flock(*fields[:4], _dec_bytes(fields[4]), _dec_bool(fields[5]))


def _enc_statvfs(st: StatVfs) -> list[int]:
    return [
        st.bsize,
        st.frsize,
        st.blocks,
        st.bfree,
        st.bavail,
        st.files,
        st.ffree,
        st.favail,
        st.namemax,
    ]


def _dec_statvfs(value: Any) -> StatVfs:
    return StatVfs(*(_dec_int(item) for item in _dec_list(value, 9, "a statvfs of 9 fields")))


def _enc_dirents(entries: list[DirEntry]) -> list[Any]:
    return [[entry.name, entry.offset, _enc_iatt(entry.iatt)] for entry in entries]


def _dec_dirents(value: Any) -> list[DirEntry]:
    _check(type(value) is list, "a list of entries", value)
    entries = []
    for item in value:
        name, offset, iatt = _dec_list(item, 3, "an entry of 3 fields")
        entries.append(DirEntry(_dec_bytes(name), _dec_int(offset), _dec_iatt(iatt)))
    return entries


def _enc_lookup(result: tuple[Iatt, dict[str, Any]]) -> list[Any]:
    return [_enc_iatt(result[0]), result[1]]


def _dec_lookup(value: Any) -> tuple[Iatt, dict[str, Any]]:
    iatt, xdata = _dec_list(value, 2, "an iatt and a map")
    return _dec_iatt(iatt), _dec_xdata(xdata) or {}


def _enc_fh_iatt(result: tuple[int, Iatt]) -> list[Any]:
    return [result[0], _enc_iatt(result[1])]


def _dec_fh_iatt(value: Any) -> tuple[int, Iatt]:
    fh, iatt = _dec_list(value, 2, "a handle and an iatt")
    return _dec_int(fh), _dec_iatt(iatt)


def _dec_none(value: Any) -> None:
    _check(value is None, "nil", value)


def _same(value: Any) -> Any:
    return value


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]
KINDS: dict[str, Codec] = {
    "int": (_same, _dec_int),
    "opt_int": (_same, _dec_opt_int),
    "bool": (_same, _dec_bool),
    "bytes": (_same, _dec_bytes),
    "opt_bytes": (_same, _dec_opt_bytes),
    "str": (_same, _dec_str),
    "gfid": (_same, _dec_gfid),
    "xdata": (_same, _dec_xdata),
    "xattrs": (_same, _dec_xattrs),
    "strlist": (_same, _dec_strlist),
    "none": (_same, _dec_none),
    "iatt": (_enc_iatt, _dec_iatt),
    "setattr": (_enc_setattr, _dec_setattr),
    "flock": (_enc_flock, _dec_flock),
    "statvfs": (_enc_statvfs, _dec_statvfs),
    "dirents": (_enc_dirents, _dec_dirents),
    "lookup": (_enc_lookup, _dec_lookup),
    "fh_iatt": (_enc_fh_iatt, _dec_fh_iatt),
}

# Each fop: (argument kinds in call order, result kind). Must follow glusterpy.xlator's
# signatures; test_codec checks every fop of FOPS is here.
ENTRY = ("gfid", "bytes")
SIGNATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "lookup": ((*ENTRY, "xdata"), "lookup"),
    "stat": (("gfid",), "iatt"),
    "fstat": (("int",), "iatt"),
    "setattr": (("gfid", "setattr", "opt_int"), "iatt"),
    "readlink": (("gfid",), "bytes"),
    "statfs": (("gfid",), "statvfs"),
    "mknod": ((*ENTRY, "int", "int", "int", "int", "gfid"), "iatt"),
    "mkdir": ((*ENTRY, "int", "int", "int", "gfid"), "iatt"),
    "symlink": ((*ENTRY, "bytes", "int", "int", "gfid"), "iatt"),
    "create": ((*ENTRY, "int", "int", "int", "int", "gfid"), "fh_iatt"),
    "link": (("gfid", *ENTRY), "iatt"),
    "unlink": (ENTRY, "none"),
    "rmdir": (ENTRY, "none"),
    "rename": ((*ENTRY, *ENTRY, "int"), "none"),
    "open": (("gfid", "int"), "int"),
    "read": (("int", "int", "int"), DATA),
    "write": (("int", "int", DATA), "int"),
    "flush": (("int", "bytes"), "none"),
    "fsync": (("int", "bool"), "none"),
    "release": (("int",), "none"),
    "opendir": (("gfid",), "int"),
    "readdir": (("int", "int", "int"), "dirents"),
    "releasedir": (("int",), "none"),
    "fsyncdir": (("int", "bool"), "none"),
    "getxattr": (("gfid", "str"), "bytes"),
    "listxattr": (("gfid",), "strlist"),
    "setxattr": (("gfid", "str", "bytes", "int"), "none"),
    "removexattr": (("gfid", "str"), "none"),
    "xattrop": (("gfid", "str", "xattrs"), "xattrs"),
    "lk": (("int", "int", "flock"), "flock"),
    "inodelk": (("str", "gfid", "int", "flock"), "none"),
    "entrylk": (("str", "gfid", "opt_bytes", "str", "bytes"), "none"),
}


# --- fop arguments and results ----------------------------------------------------------------


def encode_args(fop: str, args: tuple[Any, ...]) -> tuple[list[Any], Any]:
    """A fop's arguments as (msgpack-able list, payload or None)."""
    kinds = SIGNATURES[fop][0]
    encoded: list[Any] = []
    payload = None
    for kind, value in zip(kinds, args, strict=True):
        if kind == DATA:
            payload = value
        else:
            encoded.append(KINDS[kind][0](value))
    return encoded, payload


def decode_args(fop: str, args: Any, payload: Any) -> tuple[Any, ...]:
    """Check and rebuild a fop's arguments; raises FrameError when they do not fit."""
    kinds = SIGNATURES[fop][0]
    wants_payload = DATA in kinds
    if not wants_payload and payload is not None:
        raise FrameError(f"{fop} request carries a payload it does not take")
    _check(type(args) is list, "an argument list", args)
    if len(args) != len(kinds) - wants_payload:
        raise FrameError(f"{fop} takes {len(kinds) - wants_payload} arguments, got {len(args)}")
    values = iter(args)
    decoded = []
    for kind in kinds:
        if kind == DATA:
            decoded.append(payload if payload is not None else b"")
        else:
            decoded.append(KINDS[kind][1](next(values)))
    return tuple(decoded)


def encode_result(fop: str, result: Any) -> tuple[Any, Any]:
    """A fop's result as (msgpack-able value, payload or None)."""
    kind = SIGNATURES[fop][1]
    if kind == DATA:
        return None, result
    return KINDS[kind][0](result), None


def decode_result(fop: str, result: Any, payload: Any) -> Any:
    kind = SIGNATURES[fop][1]
    if kind == DATA:
        _dec_none(result)
        return payload if payload is not None else b""
    if payload is not None:
        raise FrameError(f"{fop} reply carries a payload it does not take")
    return KINDS[kind][1](result)


# --- compound requests ------------------------------------------------------------------------


def _moves_data(fop: str) -> bool:
    kinds, result = SIGNATURES[fop]
    return DATA in kinds or result == DATA


def encode_compound(calls: list[tuple[str, tuple[Any, ...]]]) -> tuple[list[Any], Any]:
    """A compound's [op, args] pairs and its payload; ValueError for what the wire cannot carry."""
    if not 0 < len(calls) <= MAX_COMPOUND:
        raise ValueError(f"a compound holds 1 to {MAX_COMPOUND} fops, not {len(calls)}")
    if sum(_moves_data(fop) for fop, _ in calls) > 1:
        raise ValueError("at most one fop of a compound may move bulk data")
    body: list[Any] = []
    payload = None
    for fop, args in calls:
        encoded, data = encode_args(fop, args)
        payload = data if data is not None else payload
        body.append([OP_BY_FOP[fop], encoded])
    return body, payload


def decode_compound(body: Any, payload: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """Check and rebuild a compound's fops; raises FrameError when they do not fit."""
    _check(type(body) is list, "a list of fops", body)
    if not 0 < len(body) <= MAX_COMPOUND:
        raise FrameError(f"a compound holds 1 to {MAX_COMPOUND} fops, got {len(body)}")
    fops: list[str] = []
    for item in body:
        _check(type(item) is list and len(item) == 2, "an [op, args] pair", item)
        fops.append(fop_name(_dec_int(item[0])))
    if sum(map(_moves_data, fops)) > 1:
        raise FrameError("more than one fop of a compound moves bulk data")
    takes_payload = [DATA in SIGNATURES[fop][0] for fop in fops]
    if payload is not None and not any(takes_payload):
        raise FrameError("compound request carries a payload no fop of it takes")
    return [
        (fop, decode_args(fop, item[1], payload if takes else None))
        for fop, item, takes in zip(fops, body, takes_payload, strict=True)
    ]


def encode_compound_result(fops: list[str], results: list[Any]) -> tuple[list[Any], Any]:
    """[errno, result] per fop that ran (an OSError, the last, for one that failed), payload."""
    body: list[Any] = []
    payload = None
    for fop, result in zip(fops, results, strict=False):
        if isinstance(result, OSError):
            body.append([result.errno or errno.EIO, None])
            break
        encoded, data = encode_result(fop, result)
        payload = data if data is not None else payload
        body.append([0, encoded])
    return body, payload


def decode_compound_result(fops: list[str], body: Any, payload: Any) -> list[Any]:
    """The results of a compound's reply, a failed fop's as an OSError (its last item)."""
    _check(type(body) is list, "a list of results", body)
    if not 0 < len(body) <= len(fops):
        raise FrameError(f"a compound of {len(fops)} fops answered {len(body)} results")
    results: list[Any] = []
    for i, (fop, item) in enumerate(zip(fops, body, strict=False)):
        _check(type(item) is list and len(item) == 2, "an [errno, result] pair", item)
        err = _dec_int(item[0])
        if err:
            if i != len(body) - 1:
                raise FrameError("a compound went on after a failed fop")
            results.append(OSError(err, os.strerror(err)))
            break
        answers_data = SIGNATURES[fop][1] == DATA
        results.append(decode_result(fop, item[1], payload if answers_data else None))
    return results


# --- headers ----------------------------------------------------------------------------------


def pack_header(call_id: int, second: int, body: Any) -> bytes:
    """A request header [call id, op, args] or a reply header [call id, errno, result]."""
    return msgpack.packb([call_id, second, body], use_bin_type=True)


def unpack_header(data: Any) -> tuple[int, int, Any]:
    """Decode a header of either kind; raises FrameError for anything but [int, int, value]."""
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:
        raise FrameError(f"undecodable header: {e}") from None
    if type(value) is not list or len(value) != 3:
        raise FrameError("header is not a list of 3 items")
    call_id, second, body = value
    if not (_is_int(call_id) and _is_int(second)):
        raise FrameError("header's call id or op/errno is not an integer")
    return call_id, second, body


def pack_prefix(kind: int, header_len: int, payload_len: int) -> bytes:
    return PREFIX.pack(MAGIC, kind, header_len, payload_len)


def unpack_prefix(data: Any, max_payload: int = MAX_PAYLOAD) -> tuple[int, int, int]:
    """(kind, header length, payload length) of a prefix, all bounds checked."""
    magic, kind, header_len, payload_len = PREFIX.unpack(data)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r} (not a glusterpy peer?)")
    if kind not in (REQUEST, REPLY):
        raise FrameError(f"unknown frame kind {kind}")
    if not 0 < header_len <= MAX_HEADER:
        raise FrameError(f"header length {header_len} outside 1..{MAX_HEADER}")
    if payload_len > max_payload:
        raise FrameError(f"payload length {payload_len} above the limit {max_payload}")
    return kind, header_len, payload_len


def fop_name(op: int) -> str:
    """The fop an op number names; FrameError for an unknown number."""
    try:
        return FOP_BY_OP[op]
    except KeyError:
        raise FrameError(f"unknown op {op}") from None
