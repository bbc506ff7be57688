"""A glusterpy replica-2 volume for the benchmark: two glusterpyd bricks and a FUSE mount.

Layout under `base`: brick0/ and brick1/ (volfile, log, export/), client.vol, mount.log and the
mount point mnt/. The bricks and the mount run from the same virtual environment as this
program, in the foreground, as children of it; `teardown` unmounts and stops them by pid and is
safe to call at any point of `setup`, more than once.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from bench import procs
from bench.config import PerfTranslator, brick_volfile, client_volfile

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
START_TIMEOUT = 20.0
MOUNT_TIMEOUT = 30.0


def _spawn(command: list[str], stderr_file: Path) -> subprocess.Popen:
    """Start in its own session (a Ctrl-C reaches only us), stderr into a file we can show."""
    with open(stderr_file, "wb") as stderr:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


class GlusterpyVolume:
    """Two bricks + one mount. Invariant: every process started is in `bricks` or `mount`."""

    name = "glusterpy"

    def __init__(self, base: Path, perf: list[PerfTranslator], binding: str = "kernel"):
        self.base = base
        self.perf = perf
        self.binding = binding
        self.mountpoint = base / "mnt"
        self.bricks: list[subprocess.Popen] = []
        self.mount: subprocess.Popen | None = None

    def setup(self) -> None:
        ports = [self._start_brick(self.base / f"brick{i}") for i in range(2)]
        volfile = self.base / "client.vol"
        volfile.write_text(client_volfile(ports, self.perf))
        self._mount(volfile)
        log.info("glusterpy volume mounted on %s (bricks on ports %s)", self.mountpoint, ports)

    def _start_brick(self, base: Path) -> int:
        export = base / "export"
        export.mkdir(parents=True)
        for _attempt in range(5):
            port = procs.free_port()
            volfile = base / "brick.vol"
            volfile.write_text(brick_volfile(str(export), port))
            command = [str(BIN / "glusterpyd"), "-f", str(volfile)]
            command += ["--log-file", str(base / "glusterpyd.log"), "--log-level", "WARNING"]
            proc = _spawn(command, base / "glusterpyd.stderr")
            self.bricks.append(proc)
            if self._wait_accepting(proc, port):
                return port
            self.bricks.remove(proc)
            procs.stop_popen(proc)
        raise procs.BenchError(f"glusterpyd in {base} did not start; see {base}/glusterpyd.*")

    @staticmethod
    def _wait_accepting(proc: subprocess.Popen, port: int) -> bool:
        try:
            procs.wait_for(
                lambda: proc.poll() is not None or procs.accepts(port),
                START_TIMEOUT,
                f"glusterpyd on port {port}",
            )
        except procs.BenchError:
            return False
        return proc.poll() is None

    def _mount(self, volfile: Path) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        command = [str(BIN / "glusterpy"), "mount", "-f", str(volfile), str(self.mountpoint)]
        command += ["--foreground", "--log-file", str(self.base / "mount.log")]
        command += ["--log-level", "WARNING", "-o", f"binding={self.binding}"]
        self.mount = _spawn(command, self.base / "mount.stderr")
        mounted = procs.wait_for(
            lambda: self.mount.poll() is not None or procs.is_mounted(str(self.mountpoint)),
            MOUNT_TIMEOUT,
            f"glusterpy mount on {self.mountpoint}",
        )
        if self.mount.poll() is not None or not mounted:
            error = (self.base / "mount.stderr").read_text(errors="replace").strip()
            raise procs.BenchError(f"glusterpy mount failed: {error or 'see mount.log'}")

    def brick_pids(self) -> list[int]:
        return [proc.pid for proc in self.bricks if proc.poll() is None]

    def client_pids(self) -> list[int]:
        return [self.mount.pid] if self.mount is not None and self.mount.poll() is None else []

    def teardown(self) -> None:
        umount = [str(BIN / "glusterpy"), "umount"]
        procs.unmount(str(self.mountpoint), umount)
        procs.stop_popen(self.mount)
        self.mount = None
        for proc in self.bricks:
            procs.stop_popen(proc)
        self.bricks = []
