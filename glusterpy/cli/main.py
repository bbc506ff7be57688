"""`glusterpy`: mount and unmount volumes, and administer volfiles and volumes.

Each subcommand lives in its own module under glusterpy.cli, which exposes
`register(subparsers)`; the parser it adds sets `func` to a function taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from glusterpy import __version__
from glusterpy.cli.common import run_main

# Subcommand modules, in the order `glusterpy --help` lists them.
COMMANDS = ("mount", "volfile", "heal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glusterpy", description="Mount and administer glusterpy volumes."
    )
    parser.add_argument("--version", action="version", version=f"glusterpy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"glusterpy.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"glusterpy.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("glusterpy", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
