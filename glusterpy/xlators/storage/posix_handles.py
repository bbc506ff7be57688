"""The gfid handle tree of a storage/posix brick, and safe resolution of gfids to objects.

Layout, as GlusterFS keeps it: `<brick>/.glusterfs/<g0>/<g1>/<uuid>` is a hard link to the
object for non-directories, and a symlink `../../<p0>/<p1>/<parent-uuid>/<name>` for
directories. Every object carries its gfid in the xattr `trusted.gfid`.

Invariants:
- Nothing here follows a symlink stored in the brick. Objects are opened with O_PATH|O_NOFOLLOW
  relative to a directory fd; directories are reached by walking from the brick root one
  component at a time with O_DIRECTORY|O_NOFOLLOW; a directory handle symlink is only ever read
  (readlink) and parsed, never followed.
- Metadata calls on an O_PATH fd go through `/proc/self/fd/N`, which names exactly the inode the
  fd holds (a symlink stays the symlink), so they cannot be redirected either.
- The functions here block; callers run them through `run_blocking`. The parent cache is the
  only shared state and is guarded by a threading lock, so io-threads may call in parallel.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from glusterpy.xlator import GFID_SIZE, ROOT_GFID, error

log = logging.getLogger(__name__)

GFID_XATTR = "trusted.gfid"
HANDLE_DIR = b".glusterfs"
O_OBJECT = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
O_DIRWALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
ROOT_HANDLE_TARGET = b"../../.."
CACHE_SIZE = 16384
MAX_DEPTH = 4096


def proc_path(fd: int) -> str:
    """A path naming exactly the inode behind `fd`, for calls that take no fd."""
    return f"/proc/self/fd/{fd}"


def check_name(name: bytes) -> None:
    """Refuse names that are not one plain path component (EINVAL)."""
    if not isinstance(name, bytes) or not name or name in (b".", b".."):
        raise error(errno.EINVAL, f"invalid name {name!r}")
    if b"/" in name or b"\0" in name:
        raise error(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > 255:
        raise error(errno.ENAMETOOLONG, f"name of {len(name)} bytes")


def check_gfid(gfid: bytes) -> None:
    if not isinstance(gfid, bytes) or len(gfid) != GFID_SIZE or gfid == bytes(GFID_SIZE):
        raise error(errno.EINVAL, f"invalid gfid {gfid!r}")


def canonical(gfid: bytes) -> bytes:
    """The canonical uuid text of a gfid, as bytes (the handle's file name)."""
    return str(uuid.UUID(bytes=gfid)).encode()


def handle_subdir(gfid: bytes) -> bytes:
    return b"%02x/%02x" % (gfid[0], gfid[1])


def dir_handle_target(parent: bytes, name: bytes) -> bytes:
    return b"../../" + handle_subdir(parent) + b"/" + canonical(parent) + b"/" + name


def parse_dir_handle(text: bytes) -> tuple[bytes, bytes]:
    """(parent gfid, name) from a directory handle's symlink text; EIO when malformed."""
    parts = text.split(b"/")
    if len(parts) != 6 or parts[:2] != [b"..", b".."]:
        raise error(errno.EIO, f"malformed directory handle {text!r}")
    try:
        parent = uuid.UUID(parts[4].decode("ascii")).bytes
    except ValueError:
        raise error(errno.EIO, f"malformed directory handle {text!r}") from None
    if parts[2:4] != handle_subdir(parent).split(b"/"):
        raise error(errno.EIO, f"malformed directory handle {text!r}")
    check_name(parts[5])
    return parent, parts[5]


def read_gfid(fd: int) -> bytes | None:
    """The gfid stored on the object behind `fd`, or None when it has none."""
    try:
        value = os.getxattr(proc_path(fd), GFID_XATTR)
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise
    return value if len(value) == GFID_SIZE else None


@dataclass(slots=True)
class Obj:
    """An opened object: an O_PATH fd (an O_PATH directory fd for directories) and its stat."""

    fd: int
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


class HandleTree:
    """The brick directory, its `.glusterfs` handle tree and a cache of directory parents.

    `root_fd` and `gfs_fd` stay open for the brick's lifetime. The cache maps a directory gfid
    to (parent gfid, name); it is a hint only: every resolution checks the gfid of what it
    opened and retries from the handle on disk when the hint is stale.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.root_fd = -1
        self.gfs_fd = -1
        self._parents: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    # --- start and stop ---------------------------------------------------------------------

    def open(self) -> None:
        """Open the brick, check xattr support, set the root gfid and make `.glusterfs`."""
        try:
            self.root_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ValueError(f"brick directory {self.directory} does not exist") from None
        except NotADirectoryError:
            raise ValueError(f"brick directory {self.directory} is not a directory") from None
        try:
            self._check_root_gfid()
            os.mkdir(HANDLE_DIR, 0o700, dir_fd=self.root_fd)
        except FileExistsError:
            pass
        except BaseException:
            self.close()
            raise
        self.gfs_fd = os.open(HANDLE_DIR, O_DIRWALK, dir_fd=self.root_fd)
        self._make_root_handle()

    def _check_root_gfid(self) -> None:
        try:
            gfid = read_gfid(self.root_fd)
            if gfid is None:
                os.setxattr(self.root_fd, GFID_XATTR, ROOT_GFID, os.XATTR_CREATE)
                gfid = ROOT_GFID
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise ValueError(
                    f"brick directory {self.directory} does not support trusted.* xattrs"
                ) from None
            raise
        if gfid != ROOT_GFID:
            raise ValueError(
                f"brick directory {self.directory} has gfid {uuid.UUID(bytes=gfid)} "
                "instead of the root gfid: it is a subdirectory of another brick"
            )

    def _make_root_handle(self) -> None:
        hdir = self.handle_dir(ROOT_GFID, create=True)
        try:
            os.symlink(ROOT_HANDLE_TARGET, canonical(ROOT_GFID), dir_fd=hdir)
        except FileExistsError:
            pass
        finally:
            os.close(hdir)

    def close(self) -> None:
        for fd in (self.root_fd, self.gfs_fd):
            if fd >= 0:
                os.close(fd)
        self.root_fd = self.gfs_fd = -1

    # --- the handle tree --------------------------------------------------------------------

    def handle_dir(self, gfid: bytes, create: bool = False) -> int:
        """An O_PATH fd of `.glusterfs/<g0>/<g1>`, made on demand when `create`."""
        fd = self.gfs_fd
        owned = False
        try:
            for part in handle_subdir(gfid).split(b"/"):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                nfd = os.open(part, O_DIRWALK, dir_fd=fd)
                if owned:
                    os.close(fd)
                fd, owned = nfd, True
        except BaseException:
            if owned:
                os.close(fd)
            raise
        return fd

    def link_handle(self, parent_fd: int, name: bytes, gfid: bytes, ino: int) -> None:
        """Hard-link the non-directory `name` (inode `ino`) as the handle of `gfid`.

        The link is made by name, so it is checked afterwards: if `name` was swapped for
        another inode meanwhile, the wrong handle is removed again (ESTALE).
        """
        hdir = self.handle_dir(gfid, create=True)
        handle = canonical(gfid)
        try:
            os.link(name, handle, src_dir_fd=parent_fd, dst_dir_fd=hdir, follow_symlinks=False)
            if os.stat(handle, dir_fd=hdir, follow_symlinks=False).st_ino != ino:
                os.unlink(handle, dir_fd=hdir)
                raise error(errno.ESTALE, f"{name!r} changed while its handle was made")
        finally:
            os.close(hdir)

    def set_dir_handle(self, gfid: bytes, parent: bytes, name: bytes) -> None:
        """Create or atomically rewrite the handle symlink of directory `gfid`."""
        hdir = self.handle_dir(gfid, create=True)
        final = canonical(gfid)
        temp = final + b".%d.new" % threading.get_ident()
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=hdir)
            os.symlink(dir_handle_target(parent, name), temp, dir_fd=hdir)
            os.rename(temp, final, src_dir_fd=hdir, dst_dir_fd=hdir)
        finally:
            os.close(hdir)
        self.remember(gfid, parent, name)

    def _dir_handle_text(self, gfid: bytes) -> bytes | None:
        try:
            hdir = self.handle_dir(gfid)
            try:
                return os.readlink(canonical(gfid), dir_fd=hdir)
            finally:
                os.close(hdir)
        except OSError:
            return None

    def dir_handle_is(self, gfid: bytes, parent: bytes, name: bytes) -> bool:
        """Whether the handle of directory `gfid` names (parent, name); remembers it if so."""
        if self._dir_handle_text(gfid) != dir_handle_target(parent, name):
            return False
        self.remember(gfid, parent, name)
        return True

    def ensure_dir_handle(self, gfid: bytes, parent: bytes, name: bytes) -> None:
        """Make the handle of directory `gfid` name (parent, name) if it does not yet."""
        text = self._dir_handle_text(gfid)
        if text == dir_handle_target(parent, name):
            self.remember(gfid, parent, name)
            return
        if text is not None:
            log.info("handle of directory %s was stale; now %r", uuid.UUID(bytes=gfid), name)
        self.set_dir_handle(gfid, parent, name)

    def remove_handle(self, gfid: bytes, ino: int | None = None) -> None:
        """Remove the handle of `gfid`; with `ino`, only if the handle still is that inode."""
        self.forget(gfid)
        try:
            hdir = self.handle_dir(gfid)
        except FileNotFoundError:
            return
        try:
            if ino is not None:
                st = os.stat(canonical(gfid), dir_fd=hdir, follow_symlinks=False)
                if st.st_ino != ino:
                    return
            os.unlink(canonical(gfid), dir_fd=hdir)
        except FileNotFoundError:
            pass
        finally:
            os.close(hdir)

    def handle_ino(self, gfid: bytes) -> int | None:
        """The inode number of the handle of `gfid` itself, None when there is none."""
        try:
            hdir = self.handle_dir(gfid)
        except FileNotFoundError:
            return None
        try:
            return os.stat(canonical(gfid), dir_fd=hdir, follow_symlinks=False).st_ino
        except FileNotFoundError:
            return None
        finally:
            os.close(hdir)

    def has_handle(self, gfid: bytes) -> bool:
        return self.handle_ino(gfid) is not None

    # --- the parent cache -------------------------------------------------------------------

    def remember(self, gfid: bytes, parent: bytes, name: bytes) -> None:
        with self._lock:
            self._parents[gfid] = (parent, name)
            self._parents.move_to_end(gfid)
            while len(self._parents) > CACHE_SIZE:
                self._parents.popitem(last=False)

    def forget(self, gfid: bytes) -> None:
        with self._lock:
            self._parents.pop(gfid, None)

    def _parent_of(self, gfid: bytes, use_cache: bool) -> tuple[bytes, bytes]:
        if use_cache:
            with self._lock:
                hit = self._parents.get(gfid)
            if hit is not None:
                return hit
        hdir = self.handle_dir(gfid)
        try:
            text = os.readlink(canonical(gfid), dir_fd=hdir)
        finally:
            os.close(hdir)
        parent, name = parse_dir_handle(text)
        self.remember(gfid, parent, name)
        return parent, name

    # --- resolution -------------------------------------------------------------------------

    @contextlib.contextmanager
    def resolve(self, gfid: bytes) -> Iterator[Obj]:
        """The object with `gfid`, opened O_PATH; ENOENT when no such object exists."""
        check_gfid(gfid)
        obj = self._open_gfid(gfid)
        try:
            yield obj
        finally:
            os.close(obj.fd)

    @contextlib.contextmanager
    def resolve_dir(self, gfid: bytes) -> Iterator[Obj]:
        """The directory with `gfid`; ENOTDIR when it is something else."""
        with self.resolve(gfid) as obj:
            if not obj.is_dir:
                raise error(errno.ENOTDIR, f"gfid {uuid.UUID(bytes=gfid)}")
            yield obj

    @contextlib.contextmanager
    def child(self, parent_fd: int, name: bytes) -> Iterator[Obj]:
        """The entry `name` of the directory `parent_fd`, opened O_PATH without following."""
        fd = os.open(name, O_OBJECT, dir_fd=parent_fd)
        try:
            yield Obj(fd, os.fstat(fd))
        finally:
            os.close(fd)

    def _open_gfid(self, gfid: bytes) -> Obj:
        if gfid == ROOT_GFID:
            fd = os.open(b".", O_DIRWALK, dir_fd=self.root_fd)
            return Obj(fd, os.fstat(fd))
        try:
            hdir = self.handle_dir(gfid)
        except FileNotFoundError:
            raise error(errno.ENOENT, f"no object with gfid {uuid.UUID(bytes=gfid)}") from None
        try:
            fd = os.open(canonical(gfid), O_OBJECT, dir_fd=hdir)
        except FileNotFoundError:
            raise error(errno.ENOENT, f"no object with gfid {uuid.UUID(bytes=gfid)}") from None
        finally:
            os.close(hdir)
        st = os.fstat(fd)
        if not stat.S_ISLNK(st.st_mode) or read_gfid(fd) == gfid:
            return Obj(fd, st)
        os.close(fd)
        return self._open_dir(gfid)

    def _open_dir(self, gfid: bytes) -> Obj:
        try:
            return self._walk_to(gfid, use_cache=True)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ESTALE, errno.ENOTDIR, errno.ELOOP):
                raise
        self.forget(gfid)
        return self._walk_to(gfid, use_cache=False)

    def _walk_to(self, gfid: bytes, use_cache: bool) -> Obj:
        names = []
        current = gfid
        while current != ROOT_GFID:
            current, name = self._parent_of(current, use_cache)
            names.append(name)
            if len(names) > MAX_DEPTH:
                raise error(errno.ELOOP, f"directory handle chain of {uuid.UUID(bytes=gfid)}")
        fd = os.open(b".", O_DIRWALK, dir_fd=self.root_fd)
        try:
            for name in reversed(names):
                nfd = os.open(name, O_DIRWALK, dir_fd=fd)
                os.close(fd)
                fd = nfd
            if read_gfid(fd) != gfid:
                raise error(errno.ESTALE, f"directory handle of {uuid.UUID(bytes=gfid)}")
            return Obj(fd, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
