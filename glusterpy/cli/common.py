"""What every glusterpy program shares: user errors, logging set-up and volfile loading."""

from __future__ import annotations

import argparse
import logging
import sys

from glusterpy.volfile.model import VolfileError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2, no traceback."""


def add_logging_arguments(parser: argparse.ArgumentParser, default_level: str = "INFO") -> None:
    parser.add_argument("--log-file", "-l", metavar="FILE", help="log here instead of stderr")
    parser.add_argument(
        "--log-level",
        "-L",
        metavar="LEVEL",
        default=default_level,
        type=str.upper,
        choices=LEVELS,
        help=f"one of {', '.join(LEVELS)} (default {default_level})",
    )


def setup_logging(args: argparse.Namespace) -> None:
    try:
        handler: logging.Handler = (
            logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
        )
    except OSError as e:
        raise UserError(f"cannot open log file {args.log_file}: {e.strerror}") from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(args.log_level)


def run_main(prog: str, fn, *args) -> int:
    """Run a program's body, turning user errors into one line on stderr and exit status 2."""
    try:
        return fn(*args) or 0
    except (UserError, VolfileError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
