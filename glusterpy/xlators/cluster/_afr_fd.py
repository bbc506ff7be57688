"""Handle fops of cluster/replicate: open files and directories on every child.

A handle of ours maps to one handle per child that opened the object. Writes are data
transactions over the children holding a handle; a child that was down when the file was
opened and is up again gets the file re-opened before a write (at most once a second while
that fails), so it receives the changes from then on, while the marks of what it missed stay
until a heal. A directory is read from one child chosen at opendir, since readdir cookies are
each child's own.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from glusterpy.xlator import Call, DirEntry, Flock, Iatt, Translator, error
from glusterpy.xlators.cluster._afr_changelog import DATA, ENTRY
from glusterpy.xlators.cluster._afr_read import read_candidates, read_from
from glusterpy.xlators.cluster._afr_transaction import fan_out, first_success, successes

if TYPE_CHECKING:
    from glusterpy.xlators.cluster._afr_eager import EagerHold
    from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)

_REOPEN_DROPS = os.O_CREAT | os.O_EXCL | os.O_TRUNC
_REOPEN_INTERVAL = 1.0


@dataclass(slots=True)
class OpenFd:
    """One handle of ours: the object, its open flags, and each child's handle."""

    gfid: bytes
    flags: int
    is_dir: bool
    handles: dict[int, int]
    read_child: int | None = None
    reopen_after: dict[int, float] = field(default_factory=dict)
    eager: EagerHold | None = None


class FdFops:
    """Mixin of `Replicate` with the fops on open files and directories."""

    def _init_fds(self: Replicate) -> None:
        self._fds: dict[int, OpenFd] = {}
        self._next_fh = itertools.count(1)

    def new_fd(self: Replicate, gfid: bytes, flags: int, is_dir: bool, handles: dict) -> int:
        fh = next(self._next_fh)
        self._fds[fh] = OpenFd(gfid, flags, is_dir, handles)
        return fh

    def _fd(self: Replicate, fh: int) -> OpenFd:
        try:
            return self._fds[fh]
        except KeyError:
            raise error(errno.EBADF, f"{self.name}: no open handle {fh}") from None

    def fd_handles(self: Replicate, fh: int) -> dict[int, int]:
        return self._fd(fh).handles

    def _read_changelog_call(self: Replicate, gfid: bytes) -> Call:
        """An xattrop that changes nothing and answers every changelog counter of `gfid`."""
        return "xattrop", (gfid, "add-array", {key: b"\0" * 12 for key in self.all_keys})

    def _note_changelogs(self: Replicate, gfid: bytes, changelogs: dict[int, Any]) -> None:
        if changelogs:
            state = self.inodes.record(gfid, changelogs)
            if any(v.sinks for v in state.verdicts):
                self.shd.schedule(gfid)

    async def refresh(self: Replicate, gfid: bytes) -> None:
        """Read the changelog of `gfid` on the up children to know which copies are good."""
        _, args = self._read_changelog_call(gfid)
        results = await fan_out(self, self.up_children(), lambda i, child: child.xattrop(*args))
        self._note_changelogs(gfid, {i: r for i, r in results.items() if i in successes(results)})

    async def open(self: Replicate, gfid: bytes, flags: int) -> int:
        if flags & os.O_TRUNC:
            return await self._open_truncating(gfid, flags)
        # The changelog and the open in one request per child.
        calls = [self._read_changelog_call(gfid), ("open", (gfid, flags))]

        async def call(i: int, child: Translator) -> tuple[Any, int]:
            got = await child.compound(calls)
            if isinstance(got[-1], OSError):
                raise got[-1]
            return got[0], got[1]

        results = await fan_out(self, self.up_children(), call)
        opened = {i: r for i, r in results.items() if not isinstance(r, OSError)}
        self._note_changelogs(gfid, {i: r[0] for i, r in opened.items()})
        try:
            # Fail the open, not a later read: EIO for a split-brain, ENOTCONN with no good
            # copy up.
            read_candidates(self, gfid, DATA)
            handles = _partial(
                {i: r if isinstance(r, OSError) else r[1] for i, r in results.items()}
            )
        except OSError:
            await fan_out(self, list(opened), lambda i, child: child.release(opened[i][1]))
            raise
        return self.new_fd(gfid, flags, False, handles)

    async def _open_truncating(self: Replicate, gfid: bytes, flags: int) -> int:
        await self.refresh(gfid)
        read_candidates(self, gfid, DATA)

        async def call(i: int, child: Translator) -> int:
            return await child.open(gfid, flags)

        results = await self.modify(DATA, gfid, call, lock_range=(0, 0))
        return self.new_fd(gfid, flags, False, _partial(results))

    async def read(self: Replicate, fh: int, offset: int, size: int) -> bytes:
        fd = self._fd(fh)
        return await read_from(
            self,
            fd.gfid,
            DATA,
            lambda i, child: child.read(fd.handles[i], offset, size),
            self._readers(fd),
        )

    async def write(self: Replicate, fh: int, offset: int, data: bytes) -> int:
        fd = self._fd(fh)
        await self._reopen(fd)

        async def call(i: int, child: Translator) -> int:
            return await child.write(fd.handles[i], offset, data)

        if self.post_op_delay:
            return first_success(await self.eager.write(fd, call))
        results = await self.modify(DATA, fd.gfid, call, list(fd.handles), (offset, len(data)))
        return first_success(results)

    async def _reopen(self: Replicate, fd: OpenFd) -> None:
        """Open the file on children that came back since it was opened."""
        now = trio.current_time()
        missing = [
            i
            for i in self.up_children()
            if i not in fd.handles and fd.reopen_after.get(i, 0.0) <= now
        ]
        if not missing:
            return
        flags = fd.flags & ~_REOPEN_DROPS
        results = await fan_out(self, missing, lambda i, child: child.open(fd.gfid, flags))
        for i, result in results.items():
            if isinstance(result, OSError):
                fd.reopen_after[i] = now + _REOPEN_INTERVAL
            else:
                fd.handles[i] = result
                log.debug("%s: re-opened %s on %s", self.name, fd.gfid.hex(), self.children[i].name)

    async def fstat(self: Replicate, fh: int) -> Iatt:
        fd = self._fd(fh)
        return await read_from(
            self, fd.gfid, DATA, lambda i, child: child.fstat(fd.handles[i]), self._readers(fd)
        )

    def _readers(self: Replicate, fd: OpenFd) -> list[int]:
        order = [i for i in read_candidates(self, fd.gfid, DATA) if i in fd.handles]
        if not order:
            raise error(errno.ENOTCONN, f"{self.name}: no good copy of {fd.gfid.hex()} is open")
        return order

    async def _on_handles(self: Replicate, fd: OpenFd, call) -> Any:
        results = await fan_out(self, [i for i in fd.handles if self.is_up(i)], call)
        return first_success(results)

    async def flush(self: Replicate, fh: int, lk_owner: bytes) -> None:
        fd = self._fd(fh)
        await self.eager.end_fd(fd)
        await self._on_handles(fd, lambda i, child: child.flush(fd.handles[i], lk_owner))

    async def fsync(self: Replicate, fh: int, datasync: bool) -> None:
        fd = self._fd(fh)
        await self._on_handles(fd, lambda i, child: child.fsync(fd.handles[i], datasync))

    async def release(self: Replicate, fh: int) -> None:
        fd = self._fds.pop(fh, None)
        if fd is None:
            raise error(errno.EBADF, f"{self.name}: no open handle {fh}")
        await self.eager.end_fd(fd)
        await fan_out(self, list(fd.handles), lambda i, child: child.release(fd.handles[i]))

    async def lk(self: Replicate, fh: int, cmd: int, lock: Flock) -> Flock:
        """Application locks go to every child in order, so they hold while one is down."""
        fd = self._fd(fh)
        answer: Flock | None = None
        for i in sorted(fd.handles):
            if not self.is_up(i):
                continue
            try:
                reply = await self.children[i].lk(fd.handles[i], cmd, lock)
            except OSError as exc:
                self.child_failed(i, exc)
                if exc.errno != errno.ENOTCONN:
                    raise
                continue
            answer = answer or reply
        if answer is None:
            raise error(errno.ENOTCONN, f"{self.name}: no subvolume is up")
        return answer

    # --- directories ----------------------------------------------------------------------------

    async def opendir(self: Replicate, gfid: bytes) -> int:
        results = await fan_out(self, self.up_children(), lambda i, child: child.opendir(gfid))
        handles = _partial(results)
        state = self.inodes.get(gfid)
        good = [i for i in sorted(handles) if state is None or i in state.readable(ENTRY)]
        fh = self.new_fd(gfid, os.O_RDONLY, True, handles)
        self._fds[fh].read_child = (good or sorted(handles))[0]
        return fh

    async def readdir(self: Replicate, fh: int, offset: int, count: int) -> list[DirEntry]:
        fd = self._fd(fh)
        i = fd.read_child
        try:
            return await self.children[i].readdir(fd.handles[i], offset, count)
        except OSError as exc:
            self.child_failed(i, exc)
            raise

    async def releasedir(self: Replicate, fh: int) -> None:
        fd = self._fds.pop(fh, None)
        if fd is None:
            raise error(errno.EBADF, f"{self.name}: no open directory handle {fh}")
        await fan_out(self, list(fd.handles), lambda i, child: child.releasedir(fd.handles[i]))

    async def fsyncdir(self: Replicate, fh: int, datasync: bool) -> None:
        fd = self._fd(fh)
        await self._on_handles(fd, lambda i, child: child.fsyncdir(fd.handles[i], datasync))

    # --- internal locks from translators above --------------------------------------------------

    async def inodelk(self: Replicate, domain: str, gfid: bytes, cmd: int, lock: Flock) -> None:
        await self._lock_in_order(lambda child: child.inodelk(domain, gfid, cmd, lock))

    async def entrylk(
        self: Replicate, domain: str, parent: bytes, name: bytes | None, op: str, owner: bytes
    ) -> None:
        await self._lock_in_order(lambda child: child.entrylk(domain, parent, name, op, owner))

    async def _lock_in_order(self: Replicate, call) -> None:
        done = 0
        for i in self.up_children():
            try:
                await call(self.children[i])
                done += 1
            except OSError as exc:
                self.child_failed(i, exc)
                if exc.errno != errno.ENOTCONN:
                    raise
        if not done:
            raise error(errno.ENOTCONN, f"{self.name}: no subvolume is up")


def _partial(results: dict[int, Any]) -> dict[int, int]:
    """The handles of the children that opened the object; the first error if none did."""
    first_success(results)
    return {i: results[i] for i in successes(results)}
