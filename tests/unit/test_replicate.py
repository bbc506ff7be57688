"""Unit tests of cluster/replicate over real brick stacks in one process.

Each brick is storage/posix on its own temporary directory, with features/index and
features/locks above it, as in a brick volfile; no network. A child going down is simulated by
`Flaky`, a test-only translator between replicate and a brick that answers ENOTCONN to every
fop and reports CHILD_DOWN to its parent (and CHILD_UP when it comes back). Like a connection
to a real brick, it owns its locks under a client id, and going down drops them on the brick,
as protocol/server does when a client disconnects.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from glusterpy import xlators
from glusterpy.volfile import check, registry
from glusterpy.xlator import FOPS, ROOT_GFID, Event, Flock, SetAttr, Translator, error
from glusterpy.xlators.cluster import _afr_changelog as changelog
from glusterpy.xlators.cluster._afr_heal import Choice
from glusterpy.xlators.cluster._afr_transaction import LockSet
from glusterpy.xlators.cluster.replicate import Replicate

TIMEOUT = 60
ROOT = ROOT_GFID


def new_gfid() -> bytes:
    return uuid.uuid4().bytes


def make(type_name: str, name: str, children: list[Translator], **options: Any) -> Translator:
    """A translator of a registered type, with its declared defaults and `options`."""
    xlators.load_all()
    kind = registry.get(type_name)
    values = {}
    for option in kind.options:
        if not option.is_pattern:
            values[option.key] = check._default(option, kind.name)
    for key, value in options.items():
        option = kind.find_option(key)
        values[option.key] = option.type.parse(str(value))
    return kind.factory(name, children, values)


class Flaky(Translator):
    """Test-only: passes every fop to its brick, or answers ENOTCONN while `down`."""

    def __init__(self, name: str, children: list[Translator]):
        super().__init__(name, children, {})
        self.down = False
        self.prefix = name.encode() + b":"

    async def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            await self.child.client_disconnect(self.name)
        self.emit(Event.CHILD_DOWN if down else Event.CHILD_UP)

    def _own(self, lock: Flock) -> Flock:
        return replace(lock, owner=self.prefix + lock.owner)


def _flaky_fop(name: str) -> Callable[..., Awaitable[Any]]:
    async def fop(self: Flaky, *args: Any) -> Any:
        if self.down:
            raise error(errno.ENOTCONN, f"{self.name} is down (test)")
        if name == "flush":
            args = (args[0], self.prefix + args[1])
        elif name == "lk":
            lock = await self.child.lk(args[0], args[1], self._own(args[2]))
            return replace(lock, owner=lock.owner.removeprefix(self.prefix))
        elif name == "inodelk":
            args = (*args[:3], self._own(args[3]))
        elif name == "entrylk":
            args = (*args[:4], self.prefix + args[4])
        return await getattr(self.child, name)(*args)

    fop.__name__ = name
    return fop


for _fop in FOPS:
    setattr(Flaky, _fop, _flaky_fop(_fop))


class Stack:
    """N bricks under one replicate; `brick_dirs[i]` is brick i's directory."""

    def __init__(self, base: Path, n: int, **options: Any):
        self.brick_dirs = []
        self.flaky: list[Flaky] = []
        self.translators: list[Translator] = []
        for i in range(n):
            directory = base / f"brick{i}"
            directory.mkdir()
            self.brick_dirs.append(directory)
            posix = make("storage/posix", f"posix{i}", [], directory=directory)
            index = make(
                "features/index",
                f"index{i}",
                [posix],
                **{"index-base": directory / ".glusterfs" / "indices"},
            )
            locks = make("features/locks", f"locks{i}", [index])
            flaky = Flaky(f"vol-client-{i}", [locks])
            self.translators += [posix, index, locks, flaky]
            self.flaky.append(flaky)
        options.setdefault("heal-timeout", 3600)
        self.afr: Replicate = make("cluster/replicate", "vol-replicate", self.flaky, **options)
        self.translators.append(self.afr)

    def run(self, body: Callable[[Replicate], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for translator in self.translators:
                        await translator.start(nursery)
                    try:
                        return await body(self.afr)
                    finally:
                        for translator in reversed(self.translators):
                            await translator.stop()
                        nursery.cancel_scope.cancel()

        try:
            return trio.run(main)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def down(self, i: int) -> None:
        await self.flaky[i].set_down(True)

    async def up(self, i: int) -> None:
        await self.flaky[i].set_down(False)

    def counters(self, i: int, relpath: str) -> list[tuple[int, int, int]]:
        """Brick i's copy of every child's changelog counters on one object."""
        path = self.brick_dirs[i] / relpath
        out = []
        for j in range(len(self.flaky)):
            try:
                value = os.getxattr(path, f"trusted.afr.vol-client-{j}", follow_symlinks=False)
            except OSError:
                value = b""
            out.append(changelog.decode(value))
        return out

    def index(self, i: int) -> list[str]:
        directory = self.brick_dirs[i] / ".glusterfs" / "indices" / "xattrop"
        return sorted(os.listdir(directory)) if directory.exists() else []

    def gfid(self, i: int, relpath: str) -> bytes:
        return os.getxattr(self.brick_dirs[i] / relpath, "trusted.gfid", follow_symlinks=False)

    def assert_same(self, relpath: str) -> None:
        """Every brick holds `relpath` with equal gfid, type, mode, owner and content."""
        seen = []
        for i, directory in enumerate(self.brick_dirs):
            path = directory / relpath
            st = os.lstat(path)
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            seen.append((self.gfid(i, relpath), st.st_mode, st.st_uid, st.st_gid, content))
        assert all(s == seen[0] for s in seen), f"{relpath} differs between bricks"

    def assert_clean(self, relpath: str) -> None:
        for i in range(len(self.brick_dirs)):
            assert all(c == (0, 0, 0) for c in self.counters(i, relpath)), (i, relpath)


async def create_file(afr: Replicate, parent: bytes, name: bytes, data: bytes, mode=0o644):
    gfid = new_gfid()
    fh, iatt = await afr.create(parent, name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode, 0, 0, gfid)
    if data:
        assert await afr.write(fh, 0, data) == len(data)
    await afr.flush(fh, b"owner")
    await afr.release(fh)
    return gfid


async def read_all(afr: Replicate, gfid: bytes) -> bytes:
    fh = await afr.open(gfid, os.O_RDONLY)
    try:
        chunks = []
        offset = 0
        while chunk := await afr.read(fh, offset, 1 << 20):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        await afr.release(fh)


async def append(afr: Replicate, gfid: bytes, data: bytes) -> None:
    fh = await afr.open(gfid, os.O_WRONLY)
    try:
        size = (await afr.fstat(fh)).size
        await afr.write(fh, size, data)
    finally:
        await afr.release(fh)


async def raises_errno(err: int, awaitable: Awaitable[Any]) -> None:
    with pytest.raises(OSError) as info:
        await awaitable
    assert info.value.errno == err, f"expected {errno.errorcode[err]}, got {info.value!r}"


# --- the changelog decisions -------------------------------------------------------------------


def test_counters_encode_as_three_big_endian_int32():
    assert changelog.encode([1, 2, 3]) == bytes.fromhex("000000010000000200000003")
    assert changelog.decode(changelog.encode([-1, 0, 7])) == (-1, 0, 7)
    assert changelog.decode(None) == (0, 0, 0)


def test_find_direction_clean_sink_and_split_brain():
    clean = changelog.find_direction({0: [0, 0], 1: [0, 0]})
    assert clean.sources == {0, 1} and not clean.sinks and not clean.needs_heal
    one_sink = changelog.find_direction({0: [0, 3], 1: [0, 0]})
    assert one_sink.sources == {0} and one_sink.sinks == {1}
    split = changelog.find_direction({0: [0, 1], 1: [2, 0]})
    assert split.split_brain and not split.sources
    in_flight = changelog.find_direction({0: [1, 1], 1: [1, 1]})
    assert in_flight.fools_only and not in_flight.sinks


def test_find_direction_replica_3_picks_the_child_nobody_accuses():
    verdict = changelog.find_direction({0: [0, 1, 0], 1: [1, 0, 0], 2: [0, 0, 0]})
    assert verdict.sources == {2} and verdict.sinks == {0, 1} and not verdict.split_brain
    only_present = changelog.find_direction({0: [0, 0, 4]})
    assert only_present.sources == {0} and not only_present.sinks


# --- transactions --------------------------------------------------------------------------------


def test_writes_reach_every_brick_and_leave_clean_counters(tmp_path):
    stack = Stack(tmp_path, 3)

    async def body(afr: Replicate) -> None:
        await create_file(afr, ROOT, b"a", b"hello" * 1000)
        dir_gfid = new_gfid()
        await afr.mkdir(ROOT, b"d", 0o755, 0, 0, dir_gfid)
        await afr.symlink(dir_gfid, b"l", b"../a", 0, 0, new_gfid())
        await afr.rename(ROOT, b"a", dir_gfid, b"b")

    stack.run(body)
    for rel in ("d", "d/b", "d/l"):
        stack.assert_same(rel)
    for i in range(3):
        assert not (stack.brick_dirs[i] / "a").exists()
        assert stack.index(i) == []
    stack.assert_clean("d/b")
    stack.assert_clean("d")
    stack.assert_clean("")


def test_contending_writers_wait_for_each_other_and_leave_equal_clean_copies(tmp_path, monkeypatch):
    """Writers of one file conflict on its lock, so some take the blocking path in order."""
    stack = Stack(tmp_path, 2)
    blocked = []
    block_in_order = LockSet.block_in_order

    async def counted(self, candidates):
        blocked.append(candidates)
        await block_in_order(self, candidates)

    monkeypatch.setattr(LockSet, "block_in_order", counted)
    writers, rounds, block = 8, 5, 4096

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"shared", b"")

        async def writer(k: int) -> None:
            fh = await afr.open(gfid, os.O_WRONLY)
            try:
                for r in range(rounds):
                    # The same range each time: the writes must land in one order everywhere.
                    data = bytes([k * rounds + r]) * block
                    assert await afr.write(fh, 0, data) == block
            finally:
                await afr.release(fh)

        async with trio.open_nursery() as nursery:
            for k in range(writers):
                nursery.start_soon(writer, k)
        content = await read_all(afr, gfid)
        assert content in {bytes([n]) * block for n in range(writers * rounds)}

    stack.run(body)
    assert blocked, "no write met a conflicting lock"
    stack.assert_same("shared")
    stack.assert_clean("shared")
    assert stack.index(0) == stack.index(1) == []


def count_calls(flaky: Flaky, fop: str) -> list[tuple[Any, ...]]:
    """Record the calls of `fop` that reach one child (compounds run them one by one)."""
    seen: list[tuple[Any, ...]] = []
    inner = getattr(flaky, fop)

    async def counted(*args: Any) -> Any:
        seen.append(args)
        return await inner(*args)

    setattr(flaky, fop, counted)
    return seen


def dirty(stack: Stack, i: int, relpath: str) -> int:
    value = os.getxattr(stack.brick_dirs[i] / relpath, changelog.DIRTY_KEY)
    return changelog.decode(value)[changelog.DATA]


def test_eager_lock_one_lock_and_post_op_for_many_writes(tmp_path):
    stack = Stack(tmp_path, 2, **{"post-op-delay-secs": 60})
    locks = count_calls(stack.flaky[0], "inodelk")

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"mbox", b"")
        fh = await afr.open(gfid, os.O_WRONLY)
        for n in range(10):
            assert await afr.write(fh, n * 100, bytes([n]) * 100) == 100
        assert [dirty(stack, i, "mbox") for i in (0, 1)] == [1, 1]  # held: in flight
        await afr.flush(fh, b"owner")
        assert [dirty(stack, i, "mbox") for i in (0, 1)] == [0, 0]
        await afr.release(fh)

    stack.run(body)
    assert len(locks) == 2  # one lock and one unlock for the ten writes
    stack.assert_same("mbox")
    stack.assert_clean("mbox")
    assert stack.index(0) == stack.index(1) == []


def test_eager_lock_a_failed_write_accuses_before_it_returns(tmp_path):
    stack = Stack(tmp_path, 2, **{"post-op-delay-secs": 60})

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"mbox", b"")
        fh = await afr.open(gfid, os.O_WRONLY)
        await afr.write(fh, 0, b"both have this")
        await stack.down(1)
        await afr.write(fh, 14, b", only the first this")
        # Acknowledged while brick 1 missed it: brick 0 accuses it now, not at the flush.
        assert stack.counters(0, "mbox")[1][changelog.DATA] == 1
        assert dirty(stack, 0, "mbox") == 0
        await afr.release(fh)

    stack.run(body)
    assert (stack.brick_dirs[0] / "mbox").read_bytes() == b"both have this, only the first this"


def test_eager_lock_ends_when_another_handle_writes_or_the_delay_passes(tmp_path):
    stack = Stack(tmp_path, 2, **{"post-op-delay-secs": 1})

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"")
        one = await afr.open(gfid, os.O_WRONLY)
        two = await afr.open(gfid, os.O_WRONLY)
        with trio.fail_after(0.9):  # less than the delay: the second did not wait it out
            await afr.write(one, 0, b"one")
            await afr.write(two, 3, b"two")
            await afr.write(one, 6, b"one")
        with trio.fail_after(TIMEOUT):
            while dirty(stack, 0, "f") or dirty(stack, 1, "f"):
                await trio.sleep(0.05)  # the last hold ends by itself after the delay
        await afr.release(one)
        await afr.release(two)

    stack.run(body)
    assert (stack.brick_dirs[1] / "f").read_bytes() == b"onetwoone"
    stack.assert_same("f")
    stack.assert_clean("f")


def test_eager_lock_off_runs_one_transaction_per_write(tmp_path):
    stack = Stack(tmp_path, 2, **{"eager-lock": "off"})
    locks = count_calls(stack.flaky[0], "inodelk")

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"")
        fh = await afr.open(gfid, os.O_WRONLY)
        for n in range(3):
            await afr.write(fh, n, b"x")
            assert dirty(stack, 0, "f") == 0
        await afr.release(fh)

    stack.run(body)
    assert len(locks) == 6


def test_a_down_child_is_accused_and_healed_from_the_index(tmp_path):
    stack = Stack(tmp_path, 2)

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"old", b"1" * 100)
        await stack.down(1)
        await append(afr, gfid, b"2" * 100)
        await create_file(afr, ROOT, b"new", b"3" * 300000, mode=0o600)
        assert stack.counters(0, "old")[1][changelog.DATA] == 1
        assert stack.counters(0, "")[1][changelog.ENTRY] == 1
        # The root (entry), "old" (data) and "new" (data written while 1 had no copy).
        assert len(stack.index(0)) == 3
        await stack.up(1)
        assert await afr.shd.heal_index() == 3

    stack.run(body)
    stack.assert_same("old")
    stack.assert_same("new")
    assert (stack.brick_dirs[1] / "old").read_bytes() == b"1" * 100 + b"2" * 100
    for rel in ("", "old", "new"):
        stack.assert_clean(rel)
    assert stack.index(0) == [] and stack.index(1) == []


def test_entry_heal_replays_deletes_renames_and_recreated_names(tmp_path):
    stack = Stack(tmp_path, 2)

    async def body(afr: Replicate) -> None:
        await create_file(afr, ROOT, b"gone", b"x")
        await create_file(afr, ROOT, b"moved", b"m")
        await create_file(afr, ROOT, b"again", b"first")
        sub = new_gfid()
        await afr.mkdir(ROOT, b"sub", 0o700, 0, 0, sub)
        await create_file(afr, sub, b"inner", b"i")
        await stack.down(1)
        await afr.unlink(ROOT, b"gone")
        await afr.rename(ROOT, b"moved", ROOT, b"renamed")
        await afr.unlink(ROOT, b"again")
        await create_file(afr, ROOT, b"again", b"second")
        await afr.unlink(sub, b"inner")
        await afr.rmdir(ROOT, b"sub")
        await stack.up(1)
        await afr.shd.heal_index()

    stack.run(body)
    assert sorted(os.listdir(stack.brick_dirs[1])) == [".glusterfs", "again", "renamed"]
    stack.assert_same("again")
    stack.assert_same("renamed")
    assert (stack.brick_dirs[1] / "again").read_bytes() == b"second"
    stack.assert_clean("")


def test_reads_never_come_from_a_stale_child(tmp_path):
    stack = Stack(tmp_path, 2, **{"read-subvolume": "vol-client-1"})

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"old")
        await stack.down(1)
        fh = await afr.open(gfid, os.O_RDWR)
        await afr.write(fh, 0, b"new")
        await afr.release(fh)
        await stack.up(1)
        await afr.lookup(ROOT, b"f")
        assert await read_all(afr, gfid) == b"new"
        assert (stack.brick_dirs[1] / "f").read_bytes() == b"old"

    stack.run(body)


def test_metadata_heal_copies_mode_owner_and_xattrs(tmp_path):
    stack = Stack(tmp_path, 2)

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"x")
        await stack.down(0)
        await afr.setattr(gfid, SetAttr(mode=0o600, uid=1234, gid=5678))
        await afr.setxattr(gfid, "user.note", b"kept")
        await stack.up(0)
        await afr.shd.heal_index()

    stack.run(body)
    stack.assert_same("f")
    assert os.getxattr(stack.brick_dirs[0] / "f", "user.note") == b"kept"
    st = os.stat(stack.brick_dirs[0] / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1234, 5678)
    stack.assert_clean("f")


def test_changelog_xattrs_cannot_be_set_through_the_volume(tmp_path):
    stack = Stack(tmp_path, 2)

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"x")
        await raises_errno(errno.EPERM, afr.setxattr(gfid, "trusted.afr.vol-client-0", b"x"))
        assert not any(n.startswith("trusted.afr.") for n in await afr.listxattr(gfid))

    stack.run(body)


# --- split-brain -------------------------------------------------------------------------------


def _make_split_brain(stack: Stack, afr_gfid: list[bytes]):
    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"base")
        afr_gfid.append(gfid)
        await stack.down(1)
        await append(afr, gfid, b"-written-while-1-was-down")
        await stack.up(1)
        await stack.down(0)
        await append(afr, gfid, b"-1")
        await stack.up(0)

    return body


@pytest.mark.parametrize(
    "choice, winner",
    [
        (Choice(policy="bigger-file"), 0),
        (Choice(policy="latest-mtime"), 1),
        (Choice(policy="source-brick", brick=1), 1),
    ],
)
def test_split_brain_answers_eio_until_a_policy_resolves_it(tmp_path, choice, winner):
    stack = Stack(tmp_path, 2)
    gfids: list[bytes] = []

    async def body(afr: Replicate) -> None:
        await _make_split_brain(stack, gfids)(afr)
        gfid = gfids[0]
        await afr.lookup(ROOT, b"f")
        await raises_errno(errno.EIO, read_all(afr, gfid))
        assert (await afr.shd.heal_object(gfid))["data"] == "split-brain"
        assert await afr.shd.status(gfid) == "split-brain"
        if choice.policy == "latest-mtime":
            await trio.sleep(0.01)
            os.utime(stack.brick_dirs[1] / "f")
        result = await afr.shd.heal_object(gfid, choice)
        assert result["data"] == "healed"
        assert await afr.shd.status(gfid) == "clean"
        expected = (stack.brick_dirs[winner] / "f").read_bytes()
        await afr.lookup(ROOT, b"f")
        assert await read_all(afr, gfid) == expected

    stack.run(body)
    stack.assert_same("f")
    stack.assert_clean("f")


def test_favorite_child_serves_a_split_brain(tmp_path):
    # No background heal, so that the explicit heal below is the one that resolves it.
    stack = Stack(tmp_path, 2, **{"favorite-child": "vol-client-1", "self-heal-daemon": "off"})
    gfids: list[bytes] = []

    async def body(afr: Replicate) -> None:
        await _make_split_brain(stack, gfids)(afr)
        await afr.lookup(ROOT, b"f")
        assert await read_all(afr, gfids[0]) == b"base-1"
        assert (await afr.shd.heal_object(gfids[0]))["data"] == "healed"

    stack.run(body)
    stack.assert_same("f")
    assert (stack.brick_dirs[0] / "f").read_bytes() == b"base-1"


# --- quorum ----------------------------------------------------------------------------------


def test_quorum_auto_refuses_writes_and_serves_reads(tmp_path):
    stack = Stack(tmp_path, 3, **{"quorum-type": "auto"})

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"data")
        await stack.down(1)
        await append(afr, gfid, b"+")
        await stack.down(2)
        await raises_errno(errno.EROFS, append(afr, gfid, b"refused"))
        await raises_errno(errno.EROFS, create_file(afr, ROOT, b"g", b""))
        assert await read_all(afr, gfid) == b"data+"
        await stack.up(2)
        await append(afr, gfid, b"!")

    stack.run(body)
    assert not (stack.brick_dirs[0] / "g").exists()


def test_quorum_auto_with_half_up_needs_the_first_child(tmp_path):
    stack = Stack(tmp_path, 2, **{"quorum-type": "auto"})

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"f", b"data")
        await stack.down(1)
        await append(afr, gfid, b"ok")
        await stack.up(1)
        await stack.down(0)
        await raises_errno(errno.EROFS, append(afr, gfid, b"refused"))

    stack.run(body)


# --- data heal while writing -------------------------------------------------------------------


def test_data_heal_runs_while_the_file_is_appended(tmp_path):
    stack = Stack(tmp_path, 2, **{"self-heal-window-size": 1})
    block = os.urandom(64 * 1024)

    async def body(afr: Replicate) -> None:
        gfid = await create_file(afr, ROOT, b"big", block * 4)
        await stack.down(1)
        for _ in range(40):
            await append(afr, gfid, block)
        await stack.up(1)
        fh = await afr.open(gfid, os.O_WRONLY)

        async def writer() -> None:
            for _ in range(40):
                size = (await afr.fstat(fh)).size
                await afr.write(fh, size, block)
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await afr.shd.heal_object(gfid)
        await afr.release(fh)
        await afr.shd.heal_object(gfid)

    stack.run(body)
    stack.assert_same("big")
    assert (stack.brick_dirs[1] / "big").stat().st_size == 84 * len(block)
    stack.assert_clean("big")
