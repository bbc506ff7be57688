"""Checking a parsed volfile against the registered translator types and their option tables.

`check_volfile` reports every problem it finds (unknown type, unknown option key, bad value,
an option given under two of its names, a missing required option), each as a `VolfileError`
naming file, line and volume. `resolve_options` turns one volume's option text into the typed
values a translator is built with, raising the first problem.

This module imports no translator: callers load them first (`glusterpy.xlators.load_all()`),
so that the registry is complete.
"""

from __future__ import annotations

import logging
from typing import Any

from glusterpy.volfile import registry
from glusterpy.volfile.model import Volfile, VolfileError, VolumeDef
from glusterpy.volfile.options import Option

log = logging.getLogger(__name__)


def check_volfile(volfile: Volfile) -> list[VolfileError]:
    """Every problem in `volfile`, in file order; an empty list means it is valid."""
    problems: list[VolfileError] = []
    for volume in volfile.volumes:
        try:
            kind = registry.get(volume.type)
        except registry.UnknownType as e:
            line = volume.type_line or volume.line
            problems.append(VolfileError(volfile.path, line, str(e), volume.name))
            continue
        problems.extend(_resolve(volfile, volume, kind)[1])
    return problems


def resolve_options(
    volfile: Volfile, volume: VolumeDef, kind: registry.TranslatorType
) -> dict[str, Any]:
    """The typed options of `volume`: each declared key with its value or default, plus the
    pattern-matched keys as written. Raises the first VolfileError found."""
    values, problems = _resolve(volfile, volume, kind)
    if problems:
        raise problems[0]
    return values


def _resolve(
    volfile: Volfile, volume: VolumeDef, kind: registry.TranslatorType
) -> tuple[dict[str, Any], list[VolfileError]]:
    values: dict[str, Any] = {}
    problems: list[VolfileError] = []
    given_as: dict[str, str] = {}

    def problem(line: int, message: str) -> None:
        problems.append(VolfileError(volfile.path, line, message, volume.name))

    for key, text in volume.options.items():
        line = volume.option_lines.get(key, volume.line)
        option = kind.find_option(key)
        if option is None:
            problem(line, _unknown_key_message(key, kind.name))
            continue
        target = key if option.is_pattern else option.key
        if target in given_as:
            other = given_as[target]
            other_line = volume.option_lines.get(other, volume.line)
            message = f"option '{key}' repeats '{other}' (line {other_line}): both name '{target}'"
            problem(line, message)
            continue
        given_as[target] = key
        try:
            values[target] = option.type.parse(text)
        except ValueError as e:
            problem(line, f"option '{key}' expects {option.type.describe()}: {e}")

    for option in kind.options:
        if option.is_pattern or option.key in given_as:
            continue
        if option.required:
            expected = option.type.describe()
            problem(volume.line, f"option '{option.key}' ({expected}) is required")
        values[option.key] = _default(option, kind.name)
    return values, problems


def _default(option: Option, type_name: str) -> Any:
    if option.default is None:
        return None
    try:
        return option.type.parse(option.default)
    except ValueError as e:
        # A declaration bug, not a user mistake: say whose declaration is wrong.
        raise ValueError(f"{type_name}: default of option '{option.key}': {e}") from None


def _unknown_key_message(key: str, type_name: str) -> str:
    return (
        f"unknown option '{key}' for type {type_name} (see 'glusterpy volfile options {type_name}')"
    )
