"""`glusterpy volfile check|options|render`: work with volfiles without running anything.

`check` reports every problem of every file given, one line each, and exits 1 when there was
any; `options` lists a translator type's option table as declared by its code; `render` prints a
volfile in canonical form.
"""

from __future__ import annotations

import argparse
import logging

from glusterpy import xlators
from glusterpy.cli.common import UserError
from glusterpy.volfile import check, registry, render
from glusterpy.volfile.model import VolfileError
from glusterpy.volfile.options import Option
from glusterpy.volfile.parse import parse_file

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("volfile", help="check, render and explain volfiles")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check_parser = actions.add_parser("check", help="check volfiles; one line per problem")
    check_parser.add_argument("files", nargs="+", metavar="FILE")
    check_parser.set_defaults(func=run_check)

    options_parser = actions.add_parser("options", help="list a translator type's options")
    options_parser.add_argument("type", metavar="TYPE", help="e.g. storage/posix")
    options_parser.set_defaults(func=run_options)

    render_parser = actions.add_parser("render", help="print a volfile in canonical form")
    render_parser.add_argument("file", metavar="FILE")
    render_parser.set_defaults(func=run_render)


def problems_of(path: str) -> list[VolfileError]:
    """Every problem of the volfile at `path`: its first syntax error, or all check errors."""
    try:
        volfile = parse_file(path)
    except VolfileError as e:
        return [e]
    return check.check_volfile(volfile)


def run_check(args: argparse.Namespace) -> int:
    xlators.load_all()
    failed = False
    for path in args.files:
        problems = problems_of(path)
        for problem in problems:
            print(problem)
        if not problems:
            print(f"{path}: ok")
        failed = failed or bool(problems)
    return 1 if failed else 0


def run_options(args: argparse.Namespace) -> int:
    xlators.load_all()
    try:
        kind = registry.get(args.type)
    except registry.UnknownType as e:
        raise UserError(str(e)) from None
    if kind.name != args.type:
        print(f"{args.type} is another name for {kind.name}")
    print(options_table(kind))
    return 0


def options_table(kind: registry.TranslatorType) -> str:
    """The option table of `kind` as aligned text: key, type, default, help."""
    title = f"{kind.name} options"
    if not kind.options:
        return f"{title}: none"
    header = ("KEY", "TYPE", "DEFAULT", "HELP")
    rows = [header, *(_option_row(option) for option in kind.options)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [title]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    return "\n".join(lines)


def _option_row(option: Option) -> tuple[str, str, str, str]:
    key = "|".join((option.key, *option.aliases))
    if option.required:
        default = "(required)"
    else:
        default = "-" if option.default is None else option.default
    return key, option.type.describe(), default, option.help


def run_render(args: argparse.Namespace) -> int:
    print(render.render(parse_file(args.file)), end="")
    return 0
