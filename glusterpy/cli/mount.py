"""`glusterpy mount` and `glusterpy umount`: put a volume on a directory and take it off.

Mounting goes in this order, so that a mistake is reported before anything is changed: check the
options, the FUSE device, the mount point and the volfile; build the graph; (fork, unless
`--foreground`); start the graph and wait, bounded, until its top reports up; only then mount
and serve. A daemonizing parent waits on a pipe for the child's "ready" or its one-line error,
so the command's exit status says whether the volume is mounted.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import select
import signal
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from glusterpy.cli.common import UserError, add_logging_arguments, setup_logging
from glusterpy.fuse import module as fuse_module
from glusterpy.fuse.bridge import Bridge, MountConfig, MountError
from glusterpy.graph import Graph
from glusterpy.volfile.model import VolfileError
from glusterpy.volfile.parse import parse_file

log = logging.getLogger(__name__)

BINDINGS = ("pyfuse3", "kernel")
DEFAULT_LOG_DIR = "/var/log/glusterpy"
# Extra seconds a daemonizing parent allows beyond the start timeout (mounting, INIT).
READY_GRACE = 20.0
# Options mount(8) and fstab pass along that mean nothing to us.
IGNORED_OPTIONS = frozenset({"defaults", "rw", "auto", "noauto", "nofail", "_netdev"})

ServeFn = Callable[[Bridge, MountConfig, Callable[[], None]], Awaitable[None]]


@dataclass
class MountOptions:
    """The parsed `-o` options: cache timeouts, the binding, and the binding's own keys."""

    entry_timeout: float = 1.0
    attr_timeout: float = 1.0
    negative_timeout: float = 0.0
    binding: str = "kernel"
    device: str = "/dev/fuse"
    extra: dict[str, str] = field(default_factory=dict)


def register(subparsers: argparse._SubParsersAction) -> None:
    mount = subparsers.add_parser("mount", help="mount a volume described by a client volfile")
    mount.add_argument("-f", "--volfile", required=True, metavar="FILE", help="client volfile")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")
    mount.add_argument("--foreground", action="store_true", help="do not daemonize")
    mount.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="entry-timeout=S, attr-timeout=S, negative-timeout=S (defaults 1, 1, 0), "
        "binding=kernel|pyfuse3 (default kernel), fuse-device=PATH",
    )
    mount.add_argument("--volume-name", metavar="NAME", help="the volume to mount (default: last)")
    mount.add_argument(
        "--start-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for a brick at start (default 10)",
    )
    add_logging_arguments(mount)
    mount.set_defaults(func=run_mount)

    umount = subparsers.add_parser("umount", help="unmount a glusterpy mount")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    umount.add_argument("-l", "--lazy", action="store_true", help="detach now, clean up later")
    umount.set_defaults(func=run_umount)


# --- checks made before anything is started --------------------------------------------------


def parse_mount_options(texts: list[str]) -> MountOptions:
    options = MountOptions()
    timeouts = {"entry-timeout", "attr-timeout", "negative-timeout"}
    for text in texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if key in IGNORED_OPTIONS and not sep:
                continue
            if not sep:
                raise UserError(f"mount option '{item}' needs a value (KEY=VALUE)")
            if key in timeouts:
                setattr(options, key.replace("-", "_"), _seconds(key, value))
            elif key == "binding":
                if value not in BINDINGS:
                    raise UserError(f"mount option binding={value}: use one of {BINDINGS}")
                options.binding = value
            elif key == "fuse-device":
                options.device = value
            else:
                options.extra[key] = value
    return options


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise UserError(f"mount option {key}={value}: not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise UserError(f"mount option {key}={value}: must be between 0 and 3600 seconds")
    return seconds


def check_device(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(
            f"the FUSE device {path} is missing: load the fuse module (modprobe fuse)"
        ) from None
    except OSError as e:
        raise UserError(f"the FUSE device {path}: {e.strerror}") from None
    if not stat.S_ISCHR(st.st_mode):
        raise UserError(f"the FUSE device {path} is not a character device")
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        raise UserError(f"cannot open the FUSE device {path}: {e.strerror}") from None


def mounts() -> dict[str, tuple[str, str]]:
    """Mount point -> (file system type, source), from /proc/self/mountinfo (last one wins)."""
    found: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            rest = fields[fields.index("-") + 1 :]
            found[_unescape(fields[4])] = (rest[0], _unescape(rest[1]))
    return found


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def check_mountpoint(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"mount point {path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise UserError(
                f"mount point {path} is a dead mount ({e.strerror}); "
                f"clear it with: glusterpy umount -l {path}"
            ) from None
        raise UserError(f"mount point {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"mount point {path} is not a directory")
    if os.path.realpath(path) in mounts():
        raise UserError(f"mount point {path} is busy: a file system is already mounted there")


def brick_names(graph: Graph) -> list[str]:
    """The bricks a client graph connects to, for error messages."""
    names = []
    for translator in graph.translators.values():
        if translator.type_name == "protocol/client":
            options = translator.options
            names.append(
                f"{translator.name} ({options.get('remote-subvolume')} on "
                f"{options.get('remote-host')}:{options.get('remote-port')})"
            )
    return names


def load_binding(options: MountOptions) -> ServeFn:
    """The binding's serve function; its own `-o` keys are checked here."""
    if options.binding == "pyfuse3":
        from glusterpy.fuse import pyfuse3_binding as module
    else:
        try:
            module = importlib.import_module("glusterpy.fuse.kernel")
        except ImportError:
            raise UserError(f"binding '{options.binding}' is not available") from None
    allowed = getattr(module, "EXTRA_OPTIONS", frozenset())
    unknown = sorted(set(options.extra) - set(allowed))
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none of its own"
        raise UserError(
            f"unknown mount option '{unknown[0]}' (binding {options.binding} accepts: {accepted})"
        )
    serve = getattr(module, "serve", None)
    if serve is None:
        raise UserError(f"binding '{options.binding}' is not available")
    return serve


# --- mounting ---------------------------------------------------------------------------------


@dataclass
class MountJob:
    """Everything checked and built before the mount starts."""

    graph: Graph
    options: MountOptions
    config: MountConfig
    serve: ServeFn
    start_timeout: float
    bricks: list[str]


def prepare(args: argparse.Namespace) -> MountJob:
    options = parse_mount_options(args.options)
    serve = load_binding(options)
    check_device(options.device)
    mountpoint = os.path.abspath(args.mountpoint)
    check_mountpoint(mountpoint)
    if args.start_timeout <= 0:
        raise UserError("--start-timeout must be a positive number of seconds")
    volfile = parse_file(args.volfile)
    graph = Graph.build(volfile, args.volume_name)
    config = MountConfig(mountpoint, graph.top.name, options.device, True, options.extra)
    return MountJob(graph, options, config, serve, args.start_timeout, brick_names(graph))


async def serve_volume(job: MountJob, ready: Callable[[], None]) -> None:
    """Start the graph, wait for it to come up, mount and serve until unmounted."""
    failure = None
    async with job.graph.running():
        try:
            # A volume without protocol/client is local: nothing to wait for.
            if job.bricks and not await job.graph.wait_up(job.start_timeout):
                bricks = ", ".join(job.bricks)
                raise UserError(f"no brick reachable within {job.start_timeout:g} s: {bricks}")
            bridge = Bridge(
                job.graph.top,
                entry_timeout=job.options.entry_timeout,
                attr_timeout=job.options.attr_timeout,
                negative_timeout=job.options.negative_timeout,
            )
            log.info("volume %s is up; mounting on %s", job.config.volume, job.config.mountpoint)
            log.info("%s; binding %s", fuse_module.loaded().describe(), job.options.binding)
            await job.serve(bridge, job.config, ready)
            log.info("volume %s unmounted from %s", job.config.volume, job.config.mountpoint)
        except (UserError, MountError) as e:
            # Kept until the graph has stopped, so it is not wrapped in the nursery's group.
            failure = str(e)
    if failure is not None:
        raise UserError(failure)


def run_mount(args: argparse.Namespace) -> int:
    if not args.foreground and not args.log_file:
        args.log_file = default_log_file(args.mountpoint)
    setup_logging(args)
    job = prepare(args)
    if args.foreground:
        return run_foreground(job, args.log_file)
    return daemonize(job, args.log_file)


def run_foreground(job: MountJob, log_file: str | None) -> int:
    try:
        trio.run(serve_volume, job, lambda: log.info("mounted on %s", job.config.mountpoint))
    except (UserError, VolfileError, KeyboardInterrupt):
        raise
    except BaseException:
        # A bug, not a user error: the traceback goes to the log, one line to the terminal.
        log.exception("the mount process failed")
        where = log_file or "the log above"
        raise UserError(f"the mount process failed unexpectedly; see {where}") from None
    return 0


def default_log_file(mountpoint: str) -> str:
    """As GlusterFS does: one log per mount point, named after its path."""
    name = os.path.abspath(mountpoint).strip("/").replace("/", "-") or "root"
    try:
        os.makedirs(DEFAULT_LOG_DIR, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the log directory {DEFAULT_LOG_DIR}: {e.strerror}") from None
    return os.path.join(DEFAULT_LOG_DIR, f"{name}.log")


def daemonize(job: MountJob, log_file: str) -> int:
    """Fork; the child serves the mount, the parent returns once it is mounted or failed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os._exit(_child(job, write_end))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = _read_answer(pipe, job.start_timeout + READY_GRACE)
    if answer == b"ready":
        return 0
    if answer.startswith(b"error: "):
        raise UserError(answer[len(b"error: ") :].decode(errors="replace"))
    if answer == b"":
        _, status = os.waitpid(pid, 0)
        raise UserError(
            f"the mount process ended (status {os.waitstatus_to_exitcode(status)}) before the "
            f"mount was ready; see {log_file}"
        )
    os.kill(pid, signal.SIGTERM)
    raise UserError(
        f"the mount was not ready within {job.start_timeout + READY_GRACE:g} s; see {log_file}"
    )


def _read_answer(pipe, timeout: float) -> bytes:
    """The child's one line, b"" when it closed the pipe without one, b"?" on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([pipe], [], [], left)[0]:
            return b"?"
        chunk = os.read(pipe.fileno(), 4096)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0]


def _child(job: MountJob, pipe: int) -> int:
    """The daemon: detach from the terminal, serve, report the first outcome on `pipe`."""
    os.setsid()
    # Hold no directory busy: the volfile is read and the log file open already.
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)

    told = False

    def tell(line: str) -> None:
        """Send the parent the one line it waits for; later outcomes go to the log only."""
        nonlocal told
        if told:
            return
        told = True
        try:
            os.write(pipe, line.encode(errors="replace"))
            os.close(pipe)
        except OSError:
            log.warning("the mounting command had gone before hearing: %s", line.strip())

    try:
        trio.run(serve_volume, job, lambda: tell("ready\n"))
        return 0
    except (UserError, VolfileError) as e:
        log.error("%s", e)
        tell(f"error: {e}\n")
        return 2
    except BaseException:
        log.exception("the mount process failed")
        tell("error: the mount process failed unexpectedly; see its log\n")
        return 1


# --- unmounting -------------------------------------------------------------------------------


def run_umount(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.mountpoint)
    found = mounts().get(path)
    if found is None:
        raise UserError(f"{path} is not mounted")
    fstype, source = found
    if fstype != "fuse.glusterpy" and not source.startswith("glusterpy:"):
        raise UserError(f"{path} is not a glusterpy mount (it is {fstype} from {source})")
    commands = [
        ["umount", *(["-l"] if args.lazy else []), "--", path],
        ["fusermount3", "-u", *(["-z"] if args.lazy else []), "--", path],
    ]
    detail = ""
    for command in commands:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            detail = str(e)
            continue
        if proc.returncode == 0:
            return 0
        detail = (proc.stderr.strip().splitlines() or [f"status {proc.returncode}"])[-1]
    raise UserError(f"cannot unmount {path}: {detail}")
