"""cluster/replicate with real brick daemons and a real FUSE mount.

Each brick is a glusterpyd serving posix -> features/index -> features/locks -> io-threads ->
protocol/server on 127.0.0.1; the client volfile puts cluster/replicate over one
protocol/client per brick, and `glusterpy mount` serves it. Bricks are killed with SIGKILL and
restarted on the same port. The checks compare the brick directories (the test's view of the
disks) after `glusterpy heal` says nothing is pending; the heal commands themselves only talk
to the bricks through the client volfile.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import bricks
from tests.support.mounts import GLUSTERPY, Mount, wait_until

pytestmark = pytest.mark.integration

HEAL_WITHIN = 120.0
CLI_TIMEOUT = 120.0
SEEN_WITHIN = 20.0


def _volume(name: str, kind: str, options: dict, subvolumes: list[str] | None = None) -> str:
    lines = [f"volume {name}", f"    type {kind}"]
    lines += [f"    option {key} {value}" for key, value in options.items()]
    if subvolumes:
        lines.append(f"    subvolumes {' '.join(subvolumes)}")
    return "\n".join([*lines, "end-volume", ""])


def write_replica_brick_volfile(path: Path, directory: Path, port: int) -> Path:
    """posix -> index -> locks -> io-threads -> server, exporting `brick` to 127.0.0.1."""
    server = {
        "transport-type": "tcp",
        "transport.socket.bind-address": "127.0.0.1",
        "transport.socket.listen-port": port,
        "auth.addr.brick.allow": "127.0.0.1",
    }
    text = [
        _volume("posix", "storage/posix", {"directory": directory}),
        _volume(
            "index", "features/index", {"index-base": directory / ".glusterfs/indices"}, ["posix"]
        ),
        _volume("locks", "features/locks", {}, ["index"]),
        _volume("brick", "performance/io-threads", {"thread-count": 4}, ["locks"]),
        _volume("server", "protocol/server", server, ["brick"]),
    ]
    path.write_text("\n".join(text))
    return path


def write_replica_client_volfile(path: Path, ports: list[int], **afr_options) -> Path:
    text = []
    for i, port in enumerate(ports):
        options = {
            "remote-host": "127.0.0.1",
            "remote-port": port,
            "remote-subvolume": "brick",
            "ping-timeout": 2,
        }
        text.append(_volume(f"vol-client-{i}", "protocol/client", options))
    names = [f"vol-client-{i}" for i in range(len(ports))]
    text.append(_volume("vol", "cluster/replicate", afr_options, names))
    path.write_text("\n".join(text))
    return path


class Replica:
    """N running bricks, the client volfile over them, and a mount of it."""

    def __init__(self, tmp_path: Path, n: int, mount_factory, **afr_options):
        self.bricks: list[bricks.Brick] = []
        self.tmp_path = tmp_path
        for i in range(n):
            base = tmp_path / f"brick{i}"
            directory = base / "export"
            directory.mkdir(parents=True)
            self.bricks.append(self._start(base, directory))
        self.volfile = write_replica_client_volfile(
            tmp_path / "client.vol", [b.port for b in self.bricks], **afr_options
        )
        self.mount: Mount = mount_factory(self.volfile)

    @staticmethod
    def _start(base: Path, directory: Path) -> bricks.Brick:
        for _attempt in range(5):
            port = bricks.free_port()
            volfile = write_replica_brick_volfile(base / "brick.vol", directory, port)
            brick = bricks.Brick(base, port, volfile, directory, "brick")
            try:
                brick.start()
                return brick
            except bricks.BrickStartError as e:
                if "in use" not in str(e):
                    raise
        raise bricks.BrickStartError("no free port for a brick after 5 attempts")

    def dirs(self) -> list[Path]:
        return [b.directory for b in self.bricks]

    def heal(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [GLUSTERPY, "heal", *args, "-f", str(self.volfile), "--timeout", "10"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        if check:
            assert done.returncode == 0, f"heal {args} exited {done.returncode}: {done.stderr}"
        return done

    def wait_nothing_pending(self, timeout: float = HEAL_WITHIN) -> str:
        """Poll `heal info` until it says nothing is pending (the mount heals meanwhile)."""
        return wait_until(
            lambda: _nothing_pending(self.heal("info").stdout),
            timeout,
            "heal info to be clean",
            interval=1.0,
        )

    def stop(self) -> None:
        for brick in self.bricks:
            brick.kill()


def _nothing_pending(output: str) -> str | None:
    return output if "Nothing pending heal." in output else None


@pytest.fixture
def replica(tmp_path, mount_factory) -> Iterator[Callable[..., Replica]]:
    made: list[Replica] = []

    def make(n: int, **afr_options) -> Replica:
        made.append(Replica(tmp_path, n, mount_factory, **afr_options))
        return made[-1]

    yield make
    for volume in made:
        volume.mount.stop()
        volume.stop()


def brick_copy(directory: Path, relpath: str) -> tuple:
    """What a brick holds for one object: content, gfid, mode, owner."""
    path = directory / relpath
    st = os.lstat(path)
    content = None
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        content = digest.digest()
    gfid = os.getxattr(path, "trusted.gfid", follow_symlinks=False)
    return content, gfid, st.st_mode, st.st_uid, st.st_gid


def assert_bricks_equal(volume: Replica, relpaths: list[str]) -> None:
    for relpath in relpaths:
        copies = [brick_copy(d, relpath) for d in volume.dirs()]
        assert all(c == copies[0] for c in copies), f"{relpath} differs between bricks"


# --- a brick killed during maildir deliveries ------------------------------------------------

MESSAGES = 1000
WRITERS = 4


def message(n: int) -> bytes:
    body = hashlib.sha256(str(n).encode()).hexdigest().encode() * (2 + n % 40)
    return f"From: sender{n}@example.org\nSubject: message {n}\n\n".encode() + body


def deliver(mnt: Path, numbers: range | list[int], on_each: Callable[[int], None]) -> None:
    """Maildir delivery: write into tmp/, fsync, rename into new/."""
    for n in numbers:
        tmp = mnt / "Maildir" / "tmp" / f"{n}.host"
        with open(tmp, "wb") as f:
            f.write(message(n))
            f.flush()
            os.fsync(f.fileno())
        if n % 10 == 0:
            os.chown(tmp, 1000 + n % 7, 100 + n % 3)
            os.chmod(tmp, 0o600)
        os.rename(tmp, mnt / "Maildir" / "new" / f"{n}.host")
        on_each(n)


@pytest.mark.parametrize("n", [2, 3])
def test_brick_killed_during_maildir_deliveries_is_healed(replica, n):
    volume = replica(n)
    mnt = volume.mount.path
    for sub in ("tmp", "new", "cur"):
        (mnt / "Maildir" / sub).mkdir(parents=True)
    victim = volume.bricks[n - 1]
    delivered = []
    lock = threading.Lock()

    def on_each(number: int) -> None:
        with lock:
            delivered.append(number)
            count = len(delivered)
        if count == MESSAGES // 3:
            victim.kill()
        elif count == 2 * MESSAGES // 3:
            victim.restart()

    errors: list[str] = []

    def writer(k: int) -> None:
        try:
            deliver(mnt, range(k, MESSAGES, WRITERS), on_each)
        except BaseException as e:
            errors.append(f"{e!r} on {getattr(e, 'filename', None)}: {traceback.format_exc()}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "deliveries did not finish in time"
    assert not errors, errors[0]
    assert victim.alive()

    volume.wait_nothing_pending()
    names = [f"Maildir/new/{k}.host" for k in range(MESSAGES)]
    for directory in volume.dirs():
        assert sorted(os.listdir(directory / "Maildir" / "new")) == sorted(
            f"{k}.host" for k in range(MESSAGES)
        )
        assert os.listdir(directory / "Maildir" / "tmp") == []
    assert_bricks_equal(volume, ["Maildir", "Maildir/new", *names])
    for k in range(MESSAGES):
        assert (volume.dirs()[-1] / names[k]).read_bytes() == message(k), names[k]
    assert _nothing_pending(volume.heal("info").stdout)


# --- split-brain: each brick down in turn, with writes in between ---------------------------


def _append(path: Path, data: bytes) -> bool:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def _read_errno(path: Path) -> int | None:
    try:
        path.read_bytes()
    except OSError as e:
        return e.errno
    return None


def make_split_brain(volume: Replica, name: str) -> tuple[bytes, bytes]:
    """Brick 1 misses a write, then brick 0 misses one: each copy blames the other.

    Answers the contents brick 0 and brick 1 end up with.
    """
    path = volume.mount.path / name
    path.write_bytes(b"base\n")
    first, second = volume.bricks
    second.kill()
    wait_until(
        lambda: _append(path, b"written while brick 1 was down\n"),
        SEEN_WITHIN,
        "a write with brick 1 down",
    )
    second.restart()
    # The mount must see brick 1 again before brick 0 goes, or the next write has nowhere to go.
    first.kill()
    wait_until(
        lambda: _append(path, b"written while brick 0 was down, and longer\n"),
        SEEN_WITHIN,
        "a write with brick 0 down",
    )
    first.restart()
    copies = (first.directory / name).read_bytes(), (second.directory / name).read_bytes()
    assert copies[0] != copies[1]
    return copies


@pytest.mark.parametrize(
    "policy, winner, with_path",
    [
        (["bigger-file"], 1, False),
        (["latest-mtime"], 1, True),
        (["source-brick", "vol-client-0"], 0, False),
        (["source-brick", "127.0.0.1:brick"], 0, True),
    ],
)
def test_split_brain_is_detected_and_resolved_by_policy(replica, policy, winner, with_path):
    # No background heal in the mount: the copies must not be healed between the two outages.
    volume = replica(2, **{"self-heal-daemon": "off"})
    copies = make_split_brain(volume, "mbox")
    path = volume.mount.path / "mbox"
    wait_until(lambda: _read_errno(path) == errno.EIO, SEEN_WITHIN, "EIO from the split file")

    info = volume.heal("info").stdout
    assert "Split-brain entries: 1" in info and "/mbox - split-brain" in info, info

    args = ["split-brain", *policy, *(["/mbox"] if with_path else [])]
    done = volume.heal(*args)
    assert "resolved" in done.stdout and "NOT resolved" not in done.stdout, done.stdout
    wait_until(lambda: path.read_bytes() == copies[winner], SEEN_WITHIN, "the chosen copy")
    assert_bricks_equal(volume, ["mbox"])
    assert _nothing_pending(volume.heal("info").stdout)


def test_split_brain_is_never_healed_silently(replica):
    volume = replica(2, **{"self-heal-daemon": "off"})
    copies = make_split_brain(volume, "mbox")
    done = volume.heal("full", check=False)
    assert done.returncode == 1, done.stdout
    assert [(d / "mbox").read_bytes() for d in volume.dirs()] == list(copies)
    assert "Split-brain entries: 1" in volume.heal("info").stdout


# --- quorum ----------------------------------------------------------------------------------


def _write_errno(path: Path, data: bytes) -> int | None:
    try:
        path.write_bytes(data)
    except OSError as e:
        return e.errno
    return None


def test_quorum_auto_refuses_writes_and_serves_reads_with_two_of_three_down(replica):
    volume = replica(3, **{"quorum-type": "auto"})
    mnt = volume.mount.path
    (mnt / "kept").write_bytes(b"still readable\n")
    volume.bricks[1].kill()
    volume.bricks[2].kill()

    wait_until(lambda: _write_errno(mnt / "kept", b"x") == errno.EROFS, SEEN_WITHIN, "EROFS")
    assert _write_errno(mnt / "new-file", b"x") == errno.EROFS
    assert (mnt / "kept").read_bytes() == b"still readable\n"
    assert sorted(os.listdir(mnt)) == ["kept"]

    volume.bricks[1].restart()
    wait_until(
        lambda: _write_errno(mnt / "after", b"quorum is back\n") is None,
        SEEN_WITHIN,
        "writes with two of three bricks up",
    )
    volume.bricks[2].restart()
    volume.wait_nothing_pending()
    assert_bricks_equal(volume, ["kept", "after"])


# --- a large file healed while it is appended to ----------------------------------------------

CHUNK = 1 << 20
# 500 MiB in all, as the issue asks.
LARGE_BEFORE = 200  # MiB written while both bricks are up
LARGE_DOWN = 200  # MiB appended while brick 1 is down
LARGE_DURING = 100  # MiB appended while brick 1 is healed


def chunk(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest() * (CHUNK // 32)


def test_large_file_healed_while_appended_ends_identical(replica):
    volume = replica(2)
    path = volume.mount.path / "large"
    expected = hashlib.sha256()
    with open(path, "wb") as f:
        for n in range(LARGE_BEFORE):
            f.write(chunk(n))
            expected.update(chunk(n))
    volume.bricks[1].kill()
    with open(path, "ab") as f:
        for n in range(LARGE_BEFORE, LARGE_BEFORE + LARGE_DOWN):
            f.write(chunk(n))
            expected.update(chunk(n))
    volume.bricks[1].restart()

    # The mount heals in the background from the moment brick 1 is back; keep appending.
    total = LARGE_BEFORE + LARGE_DOWN + LARGE_DURING
    with open(path, "ab") as f:
        for n in range(LARGE_BEFORE + LARGE_DOWN, total):
            f.write(chunk(n))
            expected.update(chunk(n))
            f.flush()
    volume.wait_nothing_pending()
    for directory in volume.dirs():
        assert (directory / "large").stat().st_size == total * CHUNK
        digest = hashlib.sha256()
        with open(directory / "large", "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        assert digest.hexdigest() == expected.hexdigest(), directory
    assert_bricks_equal(volume, ["large"])
