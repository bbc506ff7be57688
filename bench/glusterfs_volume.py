"""A GlusterFS 10.3 replica-2 volume for the benchmark: glusterd, two bricks, a FUSE mount.

glusterd is started directly (no systemd) with a copy of the packaged glusterd.vol that binds
it to 127.0.0.1; the brick processes it spawns inherit that address. GlusterFS refuses brick
names of 127.0.0.1/localhost, so bricks are named by this host's name, which must resolve to a
loopback address (it is checked, so nothing is ever served beyond 127.0.0.0/8). A glusterd that
is already running is used and left running; one we started is stopped by its pid. `teardown`
is safe to call at any point of `setup`, more than once.
"""

from __future__ import annotations

import glob
import ipaddress
import logging
import os
import re
import shutil
import socket
from pathlib import Path

from bench import procs

log = logging.getLogger(__name__)

GLUSTERD_VOL = Path("/etc/glusterfs/glusterd.vol")
GLUSTERD_PORT = 24007
CLI_TIMEOUT = 120.0
START_TIMEOUT = 30.0


def loopback_hostname() -> str:
    """This host's name when it resolves to 127.0.0.0/8 only; BenchError otherwise."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError as e:
        raise procs.BenchError(f"host name '{name}' does not resolve: {e}") from None
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise procs.BenchError(
            f"host name '{name}' resolves to {sorted(addresses)}; GlusterFS needs a brick host "
            "other than 127.0.0.1, so map this name to 127.0.0.1 in /etc/hosts"
        )
    return name


def glusterd_volfile(packaged: str) -> str:
    """The packaged glusterd.vol with `transport.socket.bind-address 127.0.0.1` set."""
    lines = [
        line
        for line in packaged.splitlines()
        if not re.match(r"\s*option\s+transport\.socket\.bind-address\s", line)
    ]
    for i, line in enumerate(lines):
        if re.match(r"\s*type\s+mgmt/glusterd\s*$", line):
            lines.insert(i + 1, "    option transport.socket.bind-address 127.0.0.1")
            return "\n".join(lines) + "\n"
    raise procs.BenchError(f"{GLUSTERD_VOL}: no 'type mgmt/glusterd' line to extend")


class GlusterfsVolume:
    """glusterd (ours or already running), volume `volname`, and its mount."""

    name = "glusterfs"

    def __init__(self, base: Path, volname: str):
        self.base = base
        self.volname = volname
        self.mountpoint = base / "mnt"
        self.glusterd_pid: int | None = None
        self.created = False
        self.started = False
        self.known_brick_pids: list[int] = []

    def setup(self) -> None:
        host = loopback_hostname()
        self._start_glusterd()
        bricks = []
        for i in range(2):
            directory = self.base / f"brick{i}"
            directory.mkdir(parents=True)
            bricks.append(f"{host}:{directory}")
        self._cli("volume", "create", self.volname, "replica", "2", *bricks, "force")
        self.created = True
        self._cli("volume", "start", self.volname)
        self.started = True
        procs.wait_for(lambda: len(self.brick_pids()) == 2, START_TIMEOUT, "GlusterFS bricks")
        self.known_brick_pids = self.brick_pids()
        self._mount()
        log.info("GlusterFS volume %s mounted on %s", self.volname, self.mountpoint)

    def _start_glusterd(self) -> None:
        if procs.accepts(GLUSTERD_PORT):
            log.info("using the glusterd already listening on 127.0.0.1:%d", GLUSTERD_PORT)
            return
        volfile = self.base / "glusterd.vol"
        self.base.mkdir(parents=True, exist_ok=True)
        volfile.write_text(glusterd_volfile(GLUSTERD_VOL.read_text()))
        pid_file = self.base / "glusterd.pid"
        done = procs.run(["glusterd", f"--volfile={volfile}", "-p", str(pid_file)], CLI_TIMEOUT)
        if done.returncode != 0:
            raise procs.BenchError(f"glusterd failed to start: {done.stderr.strip()}")
        procs.wait_for(pid_file.exists, START_TIMEOUT, f"glusterd pid file {pid_file}")
        self.glusterd_pid = int(pid_file.read_text().strip())
        procs.wait_for(lambda: procs.accepts(GLUSTERD_PORT), START_TIMEOUT, "glusterd to listen")

    def _cli(self, *args: str, check: bool = True) -> str:
        done = procs.run(["gluster", "--mode=script", *args], CLI_TIMEOUT)
        if check and done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise procs.BenchError(f"gluster {' '.join(args)}: {message[-1] if message else '?'}")
        return done.stdout

    def _mount(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        source = f"127.0.0.1:/{self.volname}"
        done = procs.run(["mount", "-t", "glusterfs", source, str(self.mountpoint)], CLI_TIMEOUT)
        if done.returncode != 0 or not procs.is_mounted(str(self.mountpoint)):
            raise procs.BenchError(f"mount -t glusterfs {source} failed: {done.stderr.strip()}")

    def _pid_files(self) -> list[str]:
        return sorted(glob.glob(f"/var/run/gluster/vols/{self.volname}/*.pid"))

    def brick_pids(self) -> list[int]:
        pids = []
        for path in self._pid_files():
            try:
                pid = int(Path(path).read_text().strip())
            except (OSError, ValueError):
                continue
            if procs.pid_alive(pid):
                pids.append(pid)
        return pids

    def client_pids(self) -> list[int]:
        """The glusterfs FUSE client serving our mount point, found by its command line."""
        target = str(self.mountpoint)
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _cmdline(int(entry))[-1:] == [target]:
                return [int(entry)]
        return []

    def teardown(self) -> None:
        procs.unmount(str(self.mountpoint))
        if self.started:
            self._quiet_cli("volume", "stop", self.volname, "force")
            self.started = False
        if self.created:
            self._quiet_cli("volume", "delete", self.volname)
            self.created = False
        for pid in self.known_brick_pids:
            procs.stop_pid(pid)
        self.known_brick_pids = []
        if self.glusterd_pid is not None:
            procs.stop_pid(self.glusterd_pid)
            self.glusterd_pid = None
        shutil.rmtree(f"/var/run/gluster/vols/{self.volname}", ignore_errors=True)

    def _quiet_cli(self, *args: str) -> None:
        try:
            self._cli(*args)
        except procs.BenchError as e:
            log.warning("%s", e)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []
