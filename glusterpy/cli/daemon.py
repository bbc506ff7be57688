"""`glusterpyd`: the brick daemon. Serves a server volfile until SIGTERM or SIGINT.

It runs in the foreground (systemd Type=simple) and writes nothing to stdout; its log goes to
stderr or --log-file. A mistake in the volfile, a port in use or a missing brick directory is
one line on stderr and exit status 2, never a traceback. A clean stop (signal) exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from glusterpy import __version__
from glusterpy.cli.common import UserError, add_logging_arguments, run_main, setup_logging
from glusterpy.graph import Graph
from glusterpy.volfile.model import VolfileError
from glusterpy.volfile.parse import parse_file

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glusterpyd", description="Serve the bricks of a server volfile (protocol/server)."
    )
    parser.add_argument("--version", action="version", version=f"glusterpyd {__version__}")
    parser.add_argument(
        "-f", "--volfile", required=True, metavar="VOLFILE", help="the server volfile to serve"
    )
    parser.add_argument("--pid-file", "-p", metavar="FILE", help="write the daemon's pid here")
    parser.add_argument(
        "--volume-name",
        "-n",
        metavar="NAME",
        help="the volume to use as the top (default: the last one in the volfile)",
    )
    add_logging_arguments(parser)
    return parser


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The first leaf of a (nested) exception group that trio raised for a start failure."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _serve(graph: Graph, volfile: str) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with graph.running():
            log.info("serving %s (top volume %s, pid %d)", volfile, graph.top.name, os.getpid())
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                break


def _run(args: argparse.Namespace) -> int:
    setup_logging(args)
    volfile = parse_file(args.volfile)
    graph = Graph.build(volfile, args.volume_name)
    if graph.top.type_name != "protocol/server":
        raise UserError(
            f"{args.volfile}: the top volume '{graph.top.name}' is {graph.top.type_name}, "
            "not protocol/server; glusterpyd serves server volfiles"
        )
    if args.pid_file:
        _write_pid_file(args.pid_file)
    try:
        trio.run(_serve, graph, args.volfile)
    except BaseExceptionGroup as group:
        _fail_start(args, _first_error(group))
    except (OSError, ValueError) as e:
        _fail_start(args, e)
    finally:
        if args.pid_file:
            _remove_pid_file(args.pid_file)
    log.info("stopped")
    return 0


def _fail_start(args: argparse.Namespace, error: BaseException) -> None:
    volfile = args.volfile
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    elif isinstance(error, (OSError, ValueError, VolfileError)):
        text = str(error)
    else:
        raise error
    if args.log_file:
        # On stderr the error line below says it already; a log file gets it too.
        log.error("%s: %s", volfile, text)
    raise UserError(f"{volfile}: {text}") from None


def _write_pid_file(path: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as e:
        raise UserError(f"cannot write pid file {path}: {e.strerror}") from None


def _remove_pid_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as e:
        log.warning("cannot remove pid file %s: %s", path, e.strerror)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("glusterpyd", _run, args)


if __name__ == "__main__":
    sys.exit(main())
