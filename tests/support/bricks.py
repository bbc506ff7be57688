"""Real brick daemons for integration tests: volfile writers, `start_brick` and a fixture.

`start_brick` runs the installed `glusterpyd` (from the same virtual environment as the tests)
on 127.0.0.1 with a port picked free, and waits (bounded) until the port accepts. Every daemon
is stopped by its pid, never by name: `Brick.kill()` in teardown is always safe to call.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

GLUSTERPYD = Path(sys.executable).parent / "glusterpyd"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_brick_volfile(
    path: Path,
    directory: Path,
    port: int,
    *,
    subvolume: str = "brick",
    allow: str | None = "127.0.0.1",
    reject: str | None = None,
    thread_count: int = 4,
    io_threads: bool = True,
) -> Path:
    """posix -> locks -> io-threads -> protocol/server, serving `subvolume` on 127.0.0.1."""
    locks = f"{subvolume}-locks"
    below_server = f"{subvolume}-posix"
    text = [
        _volume(f"{subvolume}-posix", "storage/posix", {"directory": str(directory)}),
        _volume(locks, "features/locks", {}, [below_server]),
    ]
    below_server = locks
    if io_threads:
        text.append(
            _volume(subvolume, "performance/io-threads", {"thread-count": thread_count}, [locks])
        )
        below_server = subvolume
    server_options = {
        "transport-type": "tcp",
        "transport.socket.bind-address": "127.0.0.1",
        "transport.socket.listen-port": port,
    }
    if allow is not None:
        server_options[f"auth.addr.{below_server}.allow"] = allow
    if reject is not None:
        server_options[f"auth.addr.{below_server}.reject"] = reject
    text.append(_volume(f"{subvolume}-server", "protocol/server", server_options, [below_server]))
    path.write_text("\n".join(text))
    return path


def write_client_volfile(
    path: Path,
    port: int,
    *,
    name: str = "client",
    subvolume: str = "brick",
    ping_timeout: float = 2,
    host: str = "127.0.0.1",
) -> Path:
    """One protocol/client volume attached to `subvolume` at host:port."""
    options = {
        "remote-host": host,
        "remote-port": port,
        "remote-subvolume": subvolume,
        "ping-timeout": ping_timeout,
    }
    path.write_text(_volume(name, "protocol/client", options))
    return path


def _volume(name: str, kind: str, options: dict, subvolumes: list[str] | None = None) -> str:
    lines = [f"volume {name}", f"    type {kind}"]
    lines += [f"    option {key} {value}" for key, value in options.items()]
    if subvolumes:
        lines.append(f"    subvolumes {' '.join(subvolumes)}")
    lines.append("end-volume\n")
    return "\n".join(lines)


class BrickStartError(RuntimeError):
    """glusterpyd exited or never accepted connections; the message holds its stderr/log."""


class Brick:
    """One glusterpyd process serving `directory`; `subvolume` is what clients attach to.

    `pid` is the running daemon's pid (None when stopped). `restart()` keeps the port.
    """

    def __init__(self, base: Path, port: int, volfile: Path, directory: Path, subvolume: str):
        self.base = base
        self.port = port
        self.volfile = volfile
        self.directory = directory
        self.subvolume = subvolume
        self.log_file = base / "glusterpyd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        command = [str(GLUSTERPYD), "-f", str(self.volfile), "--log-file", str(self.log_file)]
        command += ["--log-level", "DEBUG"]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                self.proc = None
                raise BrickStartError(f"glusterpyd exited at start: {err.decode().strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise BrickStartError(f"glusterpyd did not accept on port {self.port}:\n{self.log_text()}")

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit status (SIGKILL after STOP_TIMEOUT)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
            raise
        finally:
            _close_pipes(proc)

    def kill(self) -> None:
        """SIGKILL by pid and reap; safe to call at any time."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)
        _close_pipes(proc)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Kill (if running) and start again on the same port and directory."""
        self.kill()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.start()
                return
            except BrickStartError as e:
                # The old socket may linger for a moment; retry until the deadline.
                if "in use" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _close_pipes(proc: subprocess.Popen) -> None:
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def start_brick(base: Path, subvolume: str = "brick", **volfile_options) -> Brick:
    """Create base/export, write base/brick.vol and start glusterpyd on a free port.

    A port taken by someone else between picking and binding is retried with a new one.
    """
    base.mkdir(parents=True, exist_ok=True)
    directory = base / "export"
    directory.mkdir(exist_ok=True)
    for _attempt in range(5):
        port = free_port()
        volfile = write_brick_volfile(
            base / "brick.vol", directory, port, subvolume=subvolume, **volfile_options
        )
        brick = Brick(base, port, volfile, directory, subvolume)
        try:
            brick.start()
            return brick
        except BrickStartError as e:
            if "in use" not in str(e):
                raise
    raise BrickStartError("no free port found for glusterpyd after 5 attempts")


@pytest.fixture
def brick_factory(tmp_path: Path) -> Iterator[Callable[..., Brick]]:
    """make(name="brick", **volfile_options) -> a running Brick; all are killed afterwards."""
    made: list[Brick] = []

    def make(name: str = "brick", **volfile_options) -> Brick:
        brick = start_brick(tmp_path / name, subvolume=name, **volfile_options)
        made.append(brick)
        return brick

    yield make
    for brick in made:
        brick.kill()
