"""The blocking half of storage/posix: each fop as a plain function on a brick directory.

`BrickOps` does the disk work for the `Posix` translator, which runs these methods through
`run_blocking`. Invariants kept here:
- Every object has a gfid xattr and a handle (see `posix_handles`); objects placed in the
  brick by hand get a gfid when first looked up or listed.
- `.glusterfs` in the brick root is invisible (ENOENT on lookup, EPERM on change, hidden from
  readdir). Names are one component (see `check_name`).
- Only regular files are ever opened for data: a device node or FIFO made by a client is never
  opened on the server, so it cannot reach the server's devices.
- Iatt.nlink of a non-directory does not count the handle link; the root's does not count
  `.glusterfs`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from glusterpy.xlator import CONTENT_KEY, ROOT_GFID, DirEntry, Iatt, SetAttr, StatVfs, error
from glusterpy.xlators.storage.posix_handles import (
    GFID_XATTR,
    HANDLE_DIR,
    O_OBJECT,
    HandleTree,
    Obj,
    canonical,
    check_gfid,
    check_name,
    proc_path,
    read_gfid,
)

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
INTERNAL_XATTRS = frozenset({GFID_XATTR})
# The most content a lookup carries (quick-read's max-file-size is at most 1000 KB).
MAX_LOOKUP_CONTENT = 1 << 20
# Open flags a client may pass; O_CREAT/O_EXCL belong to create, O_DIRECT needs aligned buffers.
OPEN_FLAGS = os.O_ACCMODE | os.O_APPEND | os.O_TRUNC | os.O_SYNC | os.O_DSYNC | os.O_NONBLOCK
CREATE_FLAGS = OPEN_FLAGS & ~os.O_TRUNC
MKNOD_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)

_libc = ctypes.CDLL(None, use_errno=True)


def make_iatt(gfid: bytes, st: os.stat_result) -> Iatt:
    nlink = st.st_nlink
    if not stat.S_ISDIR(st.st_mode):
        nlink = max(nlink - 1, 0)
    elif gfid == ROOT_GFID:
        nlink -= 1
    return Iatt(
        gfid=gfid,
        mode=st.st_mode,
        nlink=nlink,
        uid=st.st_uid,
        gid=st.st_gid,
        rdev=st.st_rdev,
        size=st.st_size,
        blocks=st.st_blocks,
        blksize=st.st_blksize,
        atime_ns=st.st_atime_ns,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
    )


def renameat2(src_fd: int, src: bytes, dst_fd: int, dst: bytes, flags: int) -> None:
    if flags == 0:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    if _libc.renameat2(src_fd, src, dst_fd, dst, ctypes.c_uint(flags)) != 0:
        err = ctypes.get_errno()
        raise error(err, f"rename {src!r} to {dst!r}")


class StripedLocks:
    """A fixed set of threading locks; a key maps to one stripe by its hash.

    `hold(*keys)` takes the stripes of all keys in stripe order, so two callers never wait
    for each other crosswise within one set.
    """

    def __init__(self, stripes: int = 64):
        self._locks = [threading.Lock() for _ in range(stripes)]

    @contextlib.contextmanager
    def hold(self, *keys: Any) -> Iterator[None]:
        indices = sorted({hash(key) % len(self._locks) for key in keys if key is not None})
        with contextlib.ExitStack() as stack:
            for i in indices:
                stack.enter_context(self._locks[i])
            yield


class BrickOps:
    """Blocking implementations of the posix fops, addressed by gfid (+ name).

    Lock order, so that io-threads may run entry fops in parallel: the names a fop changes
    (parent gfid, name) first, then the gfids whose link count it checks, then the directory
    rename lock. Holding a name from opening it to changing it keeps another thread from
    swapping it in between; holding the gfid keeps "was that its last name?" true until the
    handle is removed. Directory renames hold one lock across the rename and the handle
    rewrite, so the handle names where the directory really is.
    """

    def __init__(self, tree: HandleTree, export_statfs_size: bool = True):
        self.tree = tree
        self.export_statfs_size = export_statfs_size
        self._names = StripedLocks()
        self._inodes = StripedLocks()
        self._dir_rename_lock = threading.Lock()

    # --- names and identity -----------------------------------------------------------------

    @staticmethod
    def _hidden(parent: bytes, name: bytes) -> bool:
        return parent == ROOT_GFID and name == HANDLE_DIR

    def _check_new_name(self, parent: bytes, name: bytes) -> None:
        check_name(name)
        if self._hidden(parent, name):
            raise error(errno.EPERM, f"{name.decode()} is reserved by the brick")

    def _usable_new_gfid(self, want: Any) -> bool:
        if not isinstance(want, bytes) or len(want) != 16:
            return False
        return want not in (ROOT_GFID, bytes(16)) and not self.tree.has_handle(want)

    def identify(self, parent: bytes, parent_fd: int, name: bytes, obj: Obj, want: Any) -> bytes:
        """The gfid of `obj`, giving it a gfid and a handle when it was placed by hand."""
        gfid = read_gfid(obj.fd)
        if gfid is not None:
            if obj.is_dir and self.tree.dir_handle_is(gfid, parent, name):
                return gfid
            if not obj.is_dir and obj.st.st_nlink > 1:
                return gfid
        # Something to repair. A create or rename of this name may be half done in another
        # thread, so look again while holding the name.
        with self._names.hold((parent, name)):
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if st.st_ino != obj.st.st_ino:
                raise error(errno.ESTALE, f"{name!r} changed while it was looked up")
            obj.st = os.fstat(obj.fd)
            return self._repair(parent, parent_fd, name, obj, want)

    def _repair(self, parent: bytes, parent_fd: int, name: bytes, obj: Obj, want: Any) -> bytes:
        gfid = read_gfid(obj.fd)
        if gfid is None:
            gfid = want if self._usable_new_gfid(want) else uuid.uuid4().bytes
            try:
                os.setxattr(proc_path(obj.fd), GFID_XATTR, gfid, os.XATTR_CREATE)
                log.info("gave gfid %s to %r found in the brick", uuid.UUID(bytes=gfid), name)
            except FileExistsError:
                # Another name of the same inode got there first.
                gfid = read_gfid(obj.fd) or gfid
        if obj.is_dir:
            self.tree.ensure_dir_handle(gfid, parent, name)
        elif obj.st.st_nlink == 1:
            try:
                self.tree.link_handle(parent_fd, name, gfid, obj.st.st_ino)
            except FileExistsError:
                log.warning(
                    "gfid %s of %r is also used by another file", uuid.UUID(bytes=gfid), name
                )
            obj.st = os.fstat(obj.fd)
        return gfid

    # --- inode fops -------------------------------------------------------------------------

    def lookup(self, parent: bytes, name: bytes, xdata: dict[str, Any] | None) -> tuple[Iatt, dict]:
        check_name(name)
        if self._hidden(parent, name):
            raise error(errno.ENOENT, name.decode())
        xdata = xdata or {}
        with self.tree.resolve_dir(parent) as p:
            obj, gfid = self._identified_child(parent, p.fd, name, xdata.get("gfid-req"))
            try:
                reply: dict[str, Any] = {}
                if "xattrs" in xdata:
                    reply["xattrs"] = self._wanted_xattrs(obj.fd, xdata["xattrs"])
                content = self._small_content(obj, xdata.get(CONTENT_KEY))
                if content is not None:
                    reply[CONTENT_KEY] = content
                return make_iatt(gfid, obj.st), reply
            finally:
                os.close(obj.fd)

    def _identified_child(
        self, parent: bytes, parent_fd: int, name: bytes, want: Any
    ) -> tuple[Obj, bytes]:
        """Open entry `name` and identify it; once more if it was swapped meanwhile.

        The caller closes the returned object's fd.
        """
        for attempt in (1, 2):
            fd = os.open(name, O_OBJECT, dir_fd=parent_fd)
            try:
                obj = Obj(fd, os.fstat(fd))
                return obj, self.identify(parent, parent_fd, name, obj, want)
            except OSError as e:
                os.close(fd)
                if e.errno != errno.ESTALE or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _small_content(obj: Obj, limit: Any) -> bytes | None:
        """The whole content of a regular file of at most `limit` bytes (quick-read asks).

        None when not asked, too big, or changed in size while it was read.
        """
        if type(limit) is not int or not stat.S_ISREG(obj.st.st_mode):
            return None
        size = obj.st.st_size
        if not 0 < size <= min(limit, MAX_LOOKUP_CONTENT):
            return None
        fd = os.open(proc_path(obj.fd), os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, size + 1, 0)
        finally:
            os.close(fd)
        return data if len(data) == size else None

    @staticmethod
    def _wanted_xattrs(fd: int, wanted: Any) -> dict[str, bytes]:
        path = proc_path(fd)
        if isinstance(wanted, str):
            names = [n for n in os.listxattr(path) if n.startswith(wanted)]
        else:
            names = [n for n in wanted if isinstance(n, str)]
        found = {}
        for name in names:
            try:
                found[name] = os.getxattr(path, name)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
        return found

    def stat(self, gfid: bytes) -> Iatt:
        with self.tree.resolve(gfid) as obj:
            return make_iatt(gfid, obj.st)

    def setattr(self, gfid: bytes, attr: SetAttr, fd: int | None) -> Iatt:
        if fd is not None:
            return self._setattr_fd(gfid, attr, fd)
        with self.tree.resolve(gfid) as obj:
            return self._setattr_fd(gfid, attr, obj.fd)

    def _setattr_fd(self, gfid: bytes, attr: SetAttr, fd: int) -> Iatt:
        st = os.fstat(fd)
        path = proc_path(fd)
        if attr.size is not None:
            self._truncate(fd, st, attr.size)
        if attr.uid is not None or attr.gid is not None:
            os.chown(
                path, -1 if attr.uid is None else attr.uid, -1 if attr.gid is None else attr.gid
            )
        if attr.mode is not None:
            os.chmod(path, attr.mode & 0o7777)
        if attr.atime_ns is not None or attr.mtime_ns is not None:
            atime = st.st_atime_ns if attr.atime_ns is None else attr.atime_ns
            mtime = st.st_mtime_ns if attr.mtime_ns is None else attr.mtime_ns
            os.utime(path, ns=(atime, mtime))
        return make_iatt(gfid, os.fstat(fd))

    @staticmethod
    def _truncate(fd: int, st: os.stat_result, size: int) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise error(errno.EISDIR, "truncate of a directory")
        if not stat.S_ISREG(st.st_mode):
            raise error(errno.EINVAL, "truncate of a non-regular file")
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            if e.errno != errno.EBADF:
                raise
            wfd = os.open(proc_path(fd), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(wfd, size)
            finally:
                os.close(wfd)

    def readlink(self, gfid: bytes) -> bytes:
        with self.tree.resolve(gfid) as obj:
            if not stat.S_ISLNK(obj.st.st_mode):
                raise error(errno.EINVAL, "not a symlink")
            return os.readlink(b"", dir_fd=obj.fd)

    def statfs(self) -> StatVfs:
        sv = os.statvfs(self.tree.root_fd)
        sizes = (sv.f_blocks, sv.f_bfree, sv.f_bavail) if self.export_statfs_size else (0, 0, 0)
        return StatVfs(
            bsize=sv.f_bsize,
            frsize=sv.f_frsize,
            blocks=sizes[0],
            bfree=sizes[1],
            bavail=sizes[2],
            files=sv.f_files,
            ffree=sv.f_ffree,
            favail=sv.f_favail,
            namemax=sv.f_namemax,
        )

    # --- entry creation ---------------------------------------------------------------------

    def _new_entry(
        self,
        parent: bytes,
        name: bytes,
        gfid: bytes,
        make: Callable[[int], int | None],
        owner: tuple[int, int],
        mode: int | None,
    ) -> tuple[Iatt, int | None]:
        """Make `name` with `make(parent_fd)`, then stamp gfid, owner, mode and handle.

        Returns the Iatt and whatever `make` returned (create's open fd). Undone on failure.
        """
        self._check_new_name(parent, name)
        check_gfid(gfid)
        if gfid == ROOT_GFID or self.tree.has_handle(gfid):
            raise error(errno.EEXIST, f"gfid {uuid.UUID(bytes=gfid)} is already in use")
        with self._names.hold((parent, name)), self.tree.resolve_dir(parent) as p:
            made = make(p.fd)
            try:
                with self.tree.child(p.fd, name) as obj:
                    iatt = self._stamp(parent, p.fd, name, obj, gfid, owner, mode)
                return iatt, made
            except BaseException:
                if made is not None:
                    os.close(made)
                self._undo(p.fd, name)
                raise

    def _stamp(self, parent, parent_fd, name, obj: Obj, gfid, owner, mode) -> Iatt:
        path = proc_path(obj.fd)
        os.setxattr(path, GFID_XATTR, gfid, os.XATTR_CREATE)
        os.chown(path, owner[0], owner[1])
        if mode is not None:
            os.chmod(path, mode & 0o7777)
        if obj.is_dir:
            self.tree.set_dir_handle(gfid, parent, name)
        else:
            self.tree.link_handle(parent_fd, name, gfid, obj.st.st_ino)
        return make_iatt(gfid, os.fstat(obj.fd))

    @staticmethod
    def _undo(parent_fd: int, name: bytes) -> None:
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=parent_fd)
            else:
                os.unlink(name, dir_fd=parent_fd)
        except OSError as e:
            log.warning("could not undo a failed create of %r: %s", name, e)

    def mknod(self, parent, name, mode, rdev, uid, gid, gfid) -> Iatt:
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in MKNOD_TYPES:
            raise error(errno.EINVAL, f"mknod of file type {kind:o}")

        def make(pfd: int) -> None:
            os.mknod(name, kind | (mode & 0o7777), rdev, dir_fd=pfd)

        return self._new_entry(parent, name, gfid, make, (uid, gid), mode)[0]

    def mkdir(self, parent, name, mode, uid, gid, gfid) -> Iatt:
        def make(pfd: int) -> None:
            os.mkdir(name, mode & 0o7777, dir_fd=pfd)

        return self._new_entry(parent, name, gfid, make, (uid, gid), mode)[0]

    def symlink(self, parent, name, target, uid, gid, gfid) -> Iatt:
        if not target or b"\0" in target:
            raise error(errno.EINVAL, "invalid symlink target")

        def make(pfd: int) -> None:
            os.symlink(target, name, dir_fd=pfd)

        return self._new_entry(parent, name, gfid, make, (uid, gid), None)[0]

    def create(self, parent, name, flags, mode, uid, gid, gfid) -> tuple[int, Iatt]:
        open_flags = (flags & CREATE_FLAGS) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

        def make(pfd: int) -> int:
            return os.open(name, open_flags, mode & 0o7777, dir_fd=pfd)

        iatt, fd = self._new_entry(parent, name, gfid, make, (uid, gid), mode)
        assert fd is not None
        return fd, iatt

    # --- entry changes ----------------------------------------------------------------------

    def link(self, gfid: bytes, parent: bytes, name: bytes) -> Iatt:
        self._check_new_name(parent, name)
        with (
            self._names.hold((parent, name)),
            self._inodes.hold(gfid),
            self.tree.resolve(gfid) as obj,
            self.tree.resolve_dir(parent) as p,
        ):
            if obj.is_dir:
                raise error(errno.EPERM, "hard link to a directory")
            hdir = self.tree.handle_dir(gfid)
            try:
                os.link(
                    canonical(gfid),
                    name,
                    src_dir_fd=hdir,
                    dst_dir_fd=p.fd,
                    follow_symlinks=False,
                )
            finally:
                os.close(hdir)
            return make_iatt(gfid, os.fstat(obj.fd))

    def unlink(self, parent: bytes, name: bytes) -> None:
        self._check_new_name(parent, name)
        with (
            self._names.hold((parent, name)),
            self.tree.resolve_dir(parent) as p,
            self.tree.child(p.fd, name) as obj,
        ):
            if obj.is_dir:
                raise error(errno.EISDIR, name.decode(errors="replace"))
            gfid = read_gfid(obj.fd)
            with self._inodes.hold(gfid):
                os.unlink(name, dir_fd=p.fd)
                self._drop_if_last(gfid, obj.fd)

    def _drop_if_last(self, gfid: bytes | None, fd: int) -> None:
        """Remove the handle of a non-directory whose last name is gone (only the handle left)."""
        st = os.fstat(fd)
        if gfid is not None and st.st_nlink <= 1:
            self.tree.remove_handle(gfid, ino=st.st_ino)

    def rmdir(self, parent: bytes, name: bytes) -> None:
        self._check_new_name(parent, name)
        with (
            self._names.hold((parent, name)),
            self.tree.resolve_dir(parent) as p,
            self.tree.child(p.fd, name) as obj,
        ):
            if not obj.is_dir:
                raise error(errno.ENOTDIR, name.decode(errors="replace"))
            gfid = read_gfid(obj.fd)
            os.rmdir(name, dir_fd=p.fd)
            if gfid is not None:
                self.tree.remove_handle(gfid)

    def rename(self, oldparent, oldname, newparent, newname, flags: int) -> None:
        self._check_new_name(oldparent, oldname)
        self._check_new_name(newparent, newname)
        if flags & ~RENAME_NOREPLACE:
            raise error(errno.EINVAL, f"rename flags {flags:#x}")
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._names.hold((oldparent, oldname), (newparent, newname)))
            op = stack.enter_context(self.tree.resolve_dir(oldparent))
            np_ = stack.enter_context(self.tree.resolve_dir(newparent))
            src = stack.enter_context(self.tree.child(op.fd, oldname))
            try:
                target = stack.enter_context(self.tree.child(np_.fd, newname))
            except FileNotFoundError:
                target = None
            gfid = read_gfid(src.fd)
            if target is not None:
                stack.enter_context(self._inodes.hold(read_gfid(target.fd)))
            if src.is_dir and gfid is not None:
                # Serialised so that the handle ends up naming where the last rename put it.
                with self._dir_rename_lock:
                    renameat2(op.fd, oldname, np_.fd, newname, flags)
                    self.tree.set_dir_handle(gfid, newparent, newname)
            else:
                renameat2(op.fd, oldname, np_.fd, newname, flags)
            if target is not None and target.st.st_ino != src.st.st_ino:
                self._drop_replaced(target)

    def _drop_replaced(self, target: Obj) -> None:
        gfid = read_gfid(target.fd)
        if target.is_dir:
            if gfid is not None:
                self.tree.remove_handle(gfid)
        else:
            self._drop_if_last(gfid, target.fd)

    # --- files and directories --------------------------------------------------------------

    def open(self, gfid: bytes, flags: int) -> int:
        """Open a regular file through its handle link, never following a symlink."""
        with self.tree.resolve(gfid) as obj:
            if obj.is_dir:
                raise error(errno.EISDIR, f"gfid {uuid.UUID(bytes=gfid)}")
            if not stat.S_ISREG(obj.st.st_mode):
                raise error(errno.EPERM, "only regular files are opened on a brick")
            hdir = self.tree.handle_dir(gfid)
            try:
                open_flags = (flags & OPEN_FLAGS) | os.O_NOFOLLOW | os.O_CLOEXEC
                return os.open(canonical(gfid), open_flags, dir_fd=hdir)
            finally:
                os.close(hdir)

    def opendir(self, gfid: bytes) -> int:
        with self.tree.resolve_dir(gfid) as obj:
            return os.open(b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=obj.fd)

    def list_names(self, gfid: bytes, fd: int) -> list[bytes]:
        """A sorted snapshot of the names in directory `fd`, without `.glusterfs` at the root."""
        names = sorted(os.fsencode(n) for n in os.listdir(fd))
        if gfid == ROOT_GFID:
            names = [n for n in names if n != HANDLE_DIR]
        return names

    def entry(self, gfid: bytes, fd: int, name: bytes) -> Iatt | None:
        """The attributes of entry `name` in directory `fd`, None when it vanished."""
        try:
            obj, child = self._identified_child(gfid, fd, name, None)
        except FileNotFoundError:
            return None
        os.close(obj.fd)
        return make_iatt(child, obj.st)

    def readdir(
        self, gfid: bytes, fd: int, names: list[bytes], start: int, count: int
    ) -> list[DirEntry]:
        """Up to `count` entries of the snapshot `names` from index `start`.

        An entry's cookie is its index + 1, so it is never 0 and stays valid for this
        snapshot however the directory changes; names that vanished are skipped.
        """
        entries: list[DirEntry] = []
        index = start
        while index < len(names) and len(entries) < count:
            name = names[index]
            index += 1
            iatt = self.entry(gfid, fd, name)
            if iatt is not None:
                entries.append(DirEntry(name, index, iatt))
        return entries

    def fstat(self, gfid: bytes, fd: int) -> Iatt:
        return make_iatt(gfid, os.fstat(fd))

    # --- extended attributes ----------------------------------------------------------------

    def getxattr(self, gfid: bytes, name: str) -> bytes:
        with self.tree.resolve(gfid) as obj:
            return os.getxattr(proc_path(obj.fd), name)

    def listxattr(self, gfid: bytes) -> list[str]:
        with self.tree.resolve(gfid) as obj:
            return os.listxattr(proc_path(obj.fd))

    def setxattr(self, gfid: bytes, name: str, value: bytes, flags: int) -> None:
        self._check_xattr_name(name)
        with self.tree.resolve(gfid) as obj:
            os.setxattr(proc_path(obj.fd), name, value, flags)

    def removexattr(self, gfid: bytes, name: str) -> None:
        self._check_xattr_name(name)
        with self.tree.resolve(gfid) as obj:
            os.removexattr(proc_path(obj.fd), name)

    @staticmethod
    def _check_xattr_name(name: str) -> None:
        if not name or "\0" in name:
            raise error(errno.EINVAL, f"invalid xattr name {name!r}")
        if name in INTERNAL_XATTRS:
            raise error(errno.EPERM, f"{name} is kept by the brick")

    def add_array(self, gfid: bytes, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        """Add big-endian int32 arrays to xattrs (missing = zeros); the caller holds the lock."""
        for name, value in xattrs.items():
            self._check_xattr_name(name)
            if len(value) % 4:
                raise error(errno.EINVAL, f"xattrop value of {name} is not int32 aligned")
        result = {}
        with self.tree.resolve(gfid) as obj:
            path = proc_path(obj.fd)
            for name, value in xattrs.items():
                try:
                    current = os.getxattr(path, name)
                except OSError as e:
                    if e.errno != errno.ENODATA:
                        raise
                    current = b""
                new = add_int32_arrays(current, value)
                os.setxattr(path, name, new)
                result[name] = new
        return result


def add_int32_arrays(a: bytes, b: bytes) -> bytes:
    """Element-wise sum of two big-endian int32 arrays, wrapping; the shorter is zero-padded."""
    size = max(len(a), len(b))
    size -= size % 4
    a, b = a.ljust(size, b"\0"), b.ljust(size, b"\0")
    out = bytearray()
    for i in range(0, size, 4):
        total = int.from_bytes(a[i : i + 4], "big") + int.from_bytes(b[i : i + 4], "big")
        out += (total & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)
