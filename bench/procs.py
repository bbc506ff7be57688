"""Small, bounded process helpers for the benchmark: ports, pids, mounts, peak RSS.

Every wait here has a timeout in seconds, and every kill names one pid: nothing is found or
stopped by process name. `run` never raises for a non-zero exit; callers decide.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message is one line meant for the user."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `check` until true; BenchError naming `what` when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def run(command: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run to completion with captured text output; a timeout becomes BenchError."""
    log.debug("running %s", " ".join(command))
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, **kwargs
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"'{' '.join(command)}' did not finish within {timeout:g} s") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; never raises for a gone process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.1)
    log.warning("pid %d survived SIGKILL for %g s", pid, timeout)


def stop_popen(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop and reap a child started by us."""
    if proc is None or proc.poll() is not None:
        return
    stop_pid(proc.pid, timeout)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("pid %d not reaped within %g s", proc.pid, timeout)


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM (peak resident set) of `pid` in KiB, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def is_mounted(path: str) -> bool:
    """Whether something is mounted exactly on `path`, from mountinfo (never touching it)."""
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == path:
                return True
    return False


def unmount(path: str, command: Sequence[str] = ("umount",), timeout: float = 30.0) -> None:
    """Unmount with `command`, then lazily with umount -l if it is still there."""
    if not is_mounted(path):
        return
    try:
        run([*command, path], timeout)
    except BenchError as e:
        log.warning("%s", e)
    if is_mounted(path):
        try:
            run(["umount", "-l", path], timeout)
        except BenchError as e:
            log.warning("%s", e)


def drop_caches() -> None:
    """Write dirty pages out and drop the page cache, dentries and inodes (needs root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
            f.write("3\n")
    except OSError as e:
        raise BenchError(f"cannot drop caches through /proc/sys/vm/drop_caches: {e}") from None
