"""The kernel FUSE wire format: opcodes, flags and struct layouts, in host byte order.

Layouts are those of protocol 7.x as the kernel reads them for the minor version we answer INIT
with. Every struct here has had its current size since 7.23 except `fuse_init_out`, whose size
the kernel takes from our reply without complaint: a short one silently zeroes max_pages and
friends, so `init_out_size` picks the size that matches the negotiated minor exactly.
"""

from __future__ import annotations

import logging
import struct

from glusterpy.xlator import Iatt

log = logging.getLogger(__name__)

KERNEL_VERSION = 7
# The newest minor whose layouts this module knows; we answer with min(kernel's, this).
KERNEL_MINOR_VERSION = 45
# Older kernels lack the 64-byte init_out and FUSE_MAX_PAGES; we do not serve them.
OLDEST_MINOR_VERSION = 28

ROOT_ID = 1
PAGE_SIZE = 4096
MIN_READ_BUFFER = 8192
# The kernel's "to the end of the file" in fuse_file_lock.end.
OFFSET_MAX = 0x7FFFFFFFFFFFFFFF
# A notification's unique is 0 and its error field carries the notify code.
NOTIFY_UNIQUE = 0
# An INTERRUPT's unique is its target's with this bit set.
INTERRUPT_BIT = 1


class Op:
    """Request opcodes (enum fuse_opcode)."""

    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52


OP_NAMES = {value: name for name, value in vars(Op).items() if name.isupper()}


class Init:
    """INIT capability bits; bits 32-63 travel in flags2 and count only with INIT_EXT."""

    ASYNC_READ = 1 << 0
    POSIX_LOCKS = 1 << 1
    ATOMIC_O_TRUNC = 1 << 3
    EXPORT_SUPPORT = 1 << 4
    BIG_WRITES = 1 << 5
    DONT_MASK = 1 << 6
    FLOCK_LOCKS = 1 << 10
    HAS_IOCTL_DIR = 1 << 11
    AUTO_INVAL_DATA = 1 << 12
    DO_READDIRPLUS = 1 << 13
    READDIRPLUS_AUTO = 1 << 14
    ASYNC_DIO = 1 << 15
    WRITEBACK_CACHE = 1 << 16
    PARALLEL_DIROPS = 1 << 18
    HANDLE_KILLPRIV = 1 << 19
    POSIX_ACL = 1 << 20
    ABORT_ERROR = 1 << 21
    MAX_PAGES = 1 << 22
    SETXATTR_EXT = 1 << 29
    INIT_EXT = 1 << 30


# Setattr `valid` bits.
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8

# Open reply flags.
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1

GETATTR_FH = 1 << 0
RELEASE_FLOCK_UNLOCK = 1 << 1
LK_FLOCK = 1 << 0
FSYNC_FDATASYNC = 1 << 0

NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_ENTRY = 3

# Headers.
IN_HEADER = struct.Struct("=IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("=IiQ")  # len error unique

# Request bodies (what follows the in-header).
INIT_IN = struct.Struct("=IIII")  # major minor max_readahead flags
INIT_IN_FLAGS2 = struct.Struct("=I")  # flags2, right after INIT_IN since 7.36
GETATTR_IN = struct.Struct("=IIQ")  # getattr_flags dummy fh
SETATTR_IN = struct.Struct("=IIQQQQQQIIIIIIII")
MKNOD_IN = struct.Struct("=IIII")  # mode rdev umask padding
MKDIR_IN = struct.Struct("=II")  # mode umask
RENAME_IN = struct.Struct("=Q")  # newdir
RENAME2_IN = struct.Struct("=QII")  # newdir flags padding
LINK_IN = struct.Struct("=Q")  # oldnodeid
OPEN_IN = struct.Struct("=II")  # flags open_flags
CREATE_IN = struct.Struct("=IIII")  # flags mode umask open_flags
READ_IN = struct.Struct("=QQIIQII")  # fh offset size read_flags lock_owner flags padding
WRITE_IN = struct.Struct("=QQIIQII")  # fh offset size write_flags lock_owner flags padding
RELEASE_IN = struct.Struct("=QIIQ")  # fh flags release_flags lock_owner
FLUSH_IN = struct.Struct("=QIIQ")  # fh unused padding lock_owner
FSYNC_IN = struct.Struct("=QII")  # fh fsync_flags padding
SETXATTR_IN = struct.Struct("=II")  # size flags (SETXATTR_EXT is never asked for)
GETXATTR_IN = struct.Struct("=II")  # size padding
LK_IN = struct.Struct("=QQQQIIII")  # fh owner start end type pid lk_flags padding
FORGET_IN = struct.Struct("=Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("=II")  # count dummy
FORGET_ONE = struct.Struct("=QQ")  # nodeid nlookup
INTERRUPT_IN = struct.Struct("=Q")  # unique

# Reply bodies.
INIT_OUT = struct.Struct("=IIIIHHIIHHIIH22x")
_ATTR = "QQQQQQIIIIIIIIII"  # ino size blocks atime mtime ctime *nsec mode nlink uid gid rdev ...
ATTR_OUT = struct.Struct("=QII" + _ATTR)  # attr_valid attr_valid_nsec dummy attr
ENTRY_OUT = struct.Struct("=QQQQII" + _ATTR)  # nodeid generation entry/attr valid (+nsec) attr
OPEN_OUT = struct.Struct("=QIi")  # fh open_flags backing_id
WRITE_OUT = struct.Struct("=II")  # size padding
GETXATTR_OUT = struct.Struct("=II")  # size padding
STATFS_OUT = struct.Struct("=QQQQQIII4x24x")  # blocks bfree bavail files ffree bsize namelen frsize
LK_OUT = struct.Struct("=QQII")  # start end type pid
DIRENT = struct.Struct("=QQII")  # ino off namelen type
NOTIFY_INVAL_INODE_OUT = struct.Struct("=Qqq")  # ino off len
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("=QII")  # parent namelen flags


def init_out_size(minor: int) -> int:
    """The size of fuse_init_out that a kernel speaking 7.`minor` expects, no more, no less."""
    if minor < 5:
        return 8
    if minor < 23:
        return 24
    return INIT_OUT.size


def read_buffer_size(max_write: int) -> int:
    """The smallest read buffer the kernel accepts once max_write is negotiated."""
    return max(MIN_READ_BUFFER, IN_HEADER.size + WRITE_IN.size + max_write)


def split_seconds(seconds: float) -> tuple[int, int]:
    """A timeout as the (seconds, nanoseconds) pair the kernel takes."""
    seconds = max(0.0, seconds)
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


def attr_fields(ino: int, attr: Iatt) -> tuple[int, ...]:
    """The fields of fuse_attr for an object shown as node `ino`."""
    a_s, a_ns = divmod(attr.atime_ns, 10**9)
    m_s, m_ns = divmod(attr.mtime_ns, 10**9)
    c_s, c_ns = divmod(attr.ctime_ns, 10**9)
    return (
        ino, attr.size, attr.blocks, a_s, m_s, c_s, a_ns, m_ns, c_ns,
        attr.mode, attr.nlink, attr.uid, attr.gid, attr.rdev, attr.blksize, 0,
    )  # fmt: skip


def pack_attr_out(ino: int, attr: Iatt, timeout: float) -> bytes:
    valid, valid_ns = split_seconds(timeout)
    return ATTR_OUT.pack(valid, valid_ns, 0, *attr_fields(ino, attr))


def pack_entry_out(
    ino: int, generation: int, attr: Iatt, entry_timeout: float, attr_timeout: float
) -> bytes:
    e_s, e_ns = split_seconds(entry_timeout)
    a_s, a_ns = split_seconds(attr_timeout)
    return ENTRY_OUT.pack(ino, generation, e_s, a_s, e_ns, a_ns, *attr_fields(ino, attr))


def dirent_size(name: bytes) -> int:
    """The space one fuse_dirent for `name` takes, padded to 8 bytes as the kernel walks them."""
    return (DIRENT.size + len(name) + 7) & ~7


def pack_dirent(ino: int, next_offset: int, mode: int, name: bytes) -> bytes:
    record = DIRENT.pack(ino, next_offset, len(name), (mode >> 12) & 0o17) + name
    return record + bytes(dirent_size(name) - len(record))


def cstring(body: memoryview | bytes, start: int = 0) -> tuple[bytes, int]:
    """The NUL-terminated name at `start` and the offset just past its NUL."""
    data = bytes(body[start:]) if isinstance(body, memoryview) else body[start:]
    end = data.find(b"\0")
    if end < 0:
        return data, start + len(data)
    return data[:end], start + end + 1
