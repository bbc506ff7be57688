"""Helpers for the kernel session tests: bounded waits, mount checks and scripted children.

A `Child` is a separate Python process (a second client of the mount) that the test steers
through stdin and watches through stdout, every read bounded by a timeout.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERVER = HERE / "kernel_session_fs.py"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _mount_line(mountpoint: Path) -> list[str] | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(mountpoint):
                return fields
    return None


def mounted(mountpoint: Path) -> bool:
    """Whether a mount sits on `mountpoint`, read from mountinfo without touching it."""
    return _mount_line(mountpoint) is not None


def connection_number(mountpoint: Path) -> int:
    """The FUSE connection number of a mount: its device's minor number."""
    fields = _mount_line(mountpoint)
    assert fields is not None, f"{mountpoint} is not mounted"
    return int(fields[2].split(":")[1])


class Servers:
    """In-memory file system servers on fresh mountpoints under `root`; a context manager.

    On exit every mount is lazily unmounted and every server killed, whatever happened.
    """

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.mounts: list[Path] = []

    def __enter__(self) -> Servers:
        return self

    def __call__(self, count: int = 1, *args: str) -> list[Path]:
        number = len(self.procs)
        mounts = [self.root / f"mnt{number}-{i}" for i in range(count)]
        for mount in mounts:
            mount.mkdir()
        self.mounts += mounts
        log_path = self.root / f"server{number}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        command = [sys.executable, str(SERVER), *args, *map(str, mounts)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        for mount in mounts:
            wait_until(lambda m=mount: mounted(m) or proc.poll() is not None, 10, "the mount")
            assert proc.poll() is None, log_path.read_text()
            os.stat(mount)  # the first access waits for INIT
        return mounts

    def __exit__(self, *exc_info) -> None:
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)


class Child:
    """A Python child running `code` with `args`; it prints lines the test waits for."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._pending = b""

    def expect(self, wanted: str, timeout: float) -> str:
        """Wait for the next line and check that it starts with `wanted`; returns it."""
        line = self.next_line(timeout)
        assert line is not None, f"child said nothing within {timeout} s (wanted {wanted!r})"
        assert line.startswith(wanted), f"child said {line!r}, wanted {wanted!r}"
        return line

    def next_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._selector.close()


# A lock client: reads one command per line and prints one answer per line. Commands:
#   open PATH | close | lock KIND WAIT START LEN | getlk START LEN | flock KIND WAIT
#   | ofd KIND START LEN | alarm SECONDS | loop N lockf|flock
# KIND is r, w or u; WAIT is 0 or 1. Errors print "err NAME".
LOCK_CLIENT = r"""
import errno, fcntl, os, signal, struct, sys

KINDS = {"r": fcntl.F_RDLCK, "w": fcntl.F_WRLCK, "u": fcntl.F_UNLCK}
NAMES = {fcntl.F_RDLCK: "r", fcntl.F_WRLCK: "w", fcntl.F_UNLCK: "u"}
FLOCKS = {"r": fcntl.LOCK_SH, "w": fcntl.LOCK_EX, "u": fcntl.LOCK_UN}
fd = None


class Alarm(Exception):
    pass


def on_alarm(signum, frame):
    raise Alarm()


def flock_struct(kind, start, length):
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)


def run(words):
    global fd
    if words[0] == "open":
        fd = os.open(words[1], os.O_RDWR | os.O_CREAT, 0o644)
    elif words[0] == "close":
        os.close(fd)
    elif words[0] == "lock":
        cmd = fcntl.F_SETLKW if words[2] == "1" else fcntl.F_SETLK
        fcntl.fcntl(fd, cmd, flock_struct(KINDS[words[1]], int(words[3]), int(words[4])))
    elif words[0] == "ofd":
        lock = flock_struct(KINDS[words[1]], int(words[2]), int(words[3]))
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
    elif words[0] == "getlk":
        lock = flock_struct(fcntl.F_WRLCK, int(words[1]), int(words[2]))
        kind, _, start, length, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, lock))
        return f"{NAMES[kind]} {start} {length} {pid}"
    elif words[0] == "flock":
        fcntl.flock(fd, FLOCKS[words[1]] | (0 if words[2] == "1" else fcntl.LOCK_NB))
    elif words[0] == "alarm":
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, float(words[1]))
    elif words[0] == "loop":
        for _ in range(int(words[1])):
            if words[2] == "lockf":
                fcntl.lockf(fd, fcntl.LOCK_EX)
                fcntl.lockf(fd, fcntl.LOCK_UN)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX)
                fcntl.flock(fd, fcntl.LOCK_UN)
    return "ok"


print("pid", os.getpid(), flush=True)
for line in sys.stdin:
    try:
        answer = run(line.split())
    except Alarm:
        answer = "interrupted"
    except OSError as exc:
        answer = "err " + errno.errorcode.get(exc.errno, str(exc.errno))
    print(answer, flush=True)
"""


class LockClient(Child):
    """A second process taking locks through a mount; `do` sends a command, waits for its answer."""

    def __init__(self, path: Path):
        super().__init__(LOCK_CLIENT)
        self.pid = int(self.expect("pid", 10).split()[1])
        assert self.do(f"open {path}") == "ok"

    def do(self, command: str, timeout: float = 10) -> str:
        self.send(command)
        answer = self.next_line(timeout)
        assert answer is not None, f"no answer to {command!r} within {timeout} s"
        return answer

    def start(self, command: str) -> None:
        """Send a command that is expected to block; `answer` collects its reply later."""
        self.send(command)

    def answer(self, timeout: float) -> str | None:
        return self.next_line(timeout)

    def let_go(self, how: str, unlock: str) -> None:
        """Give up a held lock: by `unlock` (the command), by closing the file, or by dying."""
        if how == "unlock":
            assert self.do(unlock) == "ok"
        elif how == "close":
            assert self.do("close") == "ok"
        else:
            self.kill()
