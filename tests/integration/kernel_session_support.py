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
