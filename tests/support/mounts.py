"""Real FUSE mounts for tests: `glusterpy mount --foreground` in a subprocess, bounded waits.

A `Mount` owns one mount process. `start` waits (bounded) until the mount point shows up in
/proc/self/mountinfo, failing with the tail of the mount's log if the process dies first or the
time runs out. `stop` always leaves nothing behind, however the test ended: it unmounts (lazily
if the mount is busy or dead), waits for the process, and kills it by pid when it lingers.

Nothing here touches the mounted file system from inside the mount process (tests run in their
own process), and nothing waits without a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

GLUSTERPY = str(Path(sys.executable).parent / "glusterpy")
MOUNT_TIMEOUT = 20.0
EXIT_TIMEOUT = 10.0


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something true; AssertionError naming `what` at timeout.

    Exceptions from `check` count as "not yet" until the deadline, then the last one is
    reported, so a condition like "the file reads back" can be polled directly.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


def _unescape(text: str) -> str:
    return text.encode().decode("unicode_escape")


def mount_entry(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(fs type, source) of what is mounted on `path`, from mountinfo, without touching it."""
    path = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == path:
                rest = fields[fields.index("-") + 1 :]
                found = (rest[0], rest[1])
    return found


def is_mounted(path: str | os.PathLike[str]) -> bool:
    return mount_entry(path) is not None


def _lazy_umount(path: Path) -> None:
    try:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pass


class Mount:
    """One `glusterpy mount --foreground` process and its mount point."""

    def __init__(
        self,
        volfile: Path,
        mountpoint: Path,
        log_file: Path,
        options: str = "",
        extra_args: Iterable[str] = (),
    ):
        self.volfile = volfile
        self.path = mountpoint
        self.log_file = log_file
        self.options = options
        self.extra_args = list(extra_args)
        self.stderr_file = log_file.with_name(log_file.name + ".stderr")
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def command(self) -> list[str]:
        command = [GLUSTERPY, "mount", "-f", str(self.volfile), str(self.path), "--foreground"]
        command += ["--log-file", str(self.log_file), "--log-level", "INFO"]
        if self.options:
            command += ["-o", self.options]
        return command + self.extra_args

    def start(self, timeout: float = MOUNT_TIMEOUT) -> Mount:
        self.path.mkdir(parents=True, exist_ok=True)
        # stderr goes to a file: a pipe nobody reads could fill up and stall the mount.
        with open(self.stderr_file, "wb") as stderr:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                stderr = self.stderr_file.read_text(errors="replace")
                raise AssertionError(
                    f"glusterpy mount exited with {self.proc.returncode}: {stderr.strip()}\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"{self.path} not mounted within {timeout:g} s\n{self.log_tail()}"
                )
            time.sleep(0.05)
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no mount log)"
        return "mount log tail:\n" + "\n".join(text.splitlines()[-lines:])

    def unmount(self, lazy: bool = False) -> subprocess.CompletedProcess:
        command = [GLUSTERPY, "umount", *(["-l"] if lazy else []), str(self.path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Unmount and end the process whatever state they are in; never raises."""
        if is_mounted(self.path):
            try:
                unmounted = self.unmount().returncode == 0
            except subprocess.TimeoutExpired:
                unmounted = False
            if not unmounted:
                _lazy_umount(self.path)
        if self.proc is not None and self.wait_exit() is None:
            self._kill()
        if is_mounted(self.path):
            _lazy_umount(self.path)

    def _kill(self) -> None:
        assert self.proc is not None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                return
            if self.wait_exit(5.0) is not None:
                return
