"""Option declarations and the value types a volfile option can have.

Each translator declares its options once, as a tuple of `Option`. The same declaration is used
to check volfiles, to fill in defaults for the graph builder, and by `glusterpy volfile options`.
Values in a volfile are text; `OptionType.parse` turns text into a typed value or raises
`ValueError` with a message that names what was expected (the caller adds file, line, volume).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "p": 1 << 50,
    "pb": 1 << 50,
}
_TRUE = {"1", "on", "yes", "true", "enable"}
_FALSE = {"0", "off", "no", "false", "disable"}


class OptionType:
    """A kind of option value: parses text and describes itself for listings."""

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _check_range(value: float, lo: float | None, hi: float | None, shown: str) -> None:
    if lo is not None and value < lo:
        raise ValueError(f"{shown} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"{shown} is above the maximum {hi}")


@dataclass(frozen=True)
class Bool(OptionType):
    def parse(self, text: str) -> bool:
        word = text.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"'{text}' is not a boolean (on/off, yes/no, true/false, enable/disable)")

    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True)
class Int(OptionType):
    min: int | None = None
    max: int | None = None

    def parse(self, text: str) -> int:
        # strtol's base 0, as GlusterFS reads integers: 0x hex, a leading 0 octal (0755).
        octal = re.fullmatch(r"\s*[+-]?0[0-7]+\s*", text)
        try:
            value = int(text, 8) if octal else int(text, 0)
        except ValueError:
            raise ValueError(f"'{text}' is not an integer") from None
        _check_range(value, self.min, self.max, text)
        return value

    def describe(self) -> str:
        return "integer" + _describe_range(self.min, self.max)


@dataclass(frozen=True)
class Float(OptionType):
    min: float | None = None
    max: float | None = None

    def parse(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"'{text}' is not a finite number")
        _check_range(value, self.min, self.max, text)
        return value

    def describe(self) -> str:
        return "number" + _describe_range(self.min, self.max)


@dataclass(frozen=True)
class Size(OptionType):
    """A byte count with an optional binary suffix: 128KB, 1MB, 4GB (case-insensitive)."""

    min: int | None = None
    max: int | None = None

    def parse(self, text: str) -> int:
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
        unit = m and _SIZE_UNITS.get(m.group(2).lower())
        if not m or unit is None:
            raise ValueError(f"'{text}' is not a size (a number with an optional KB/MB/GB/TB)")
        value = int(m.group(1)) * unit
        _check_range(value, self.min, self.max, text)
        return value

    def describe(self) -> str:
        return "size" + _describe_range(self.min, self.max)


@dataclass(frozen=True)
class Percent(OptionType):
    def parse(self, text: str) -> float:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%?", text.strip())
        if not m:
            raise ValueError(f"'{text}' is not a percentage (e.g. 10%)")
        value = float(m.group(1))
        _check_range(value, 0, 100, text)
        return value

    def describe(self) -> str:
        return "percentage"


@dataclass(frozen=True)
class Enum(OptionType):
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> str:
        if text not in self.choices:
            raise ValueError(f"'{text}' is not one of: {', '.join(self.choices)}")
        return text

    def describe(self) -> str:
        return "one of " + "|".join(self.choices)


@dataclass(frozen=True)
class Str(OptionType):
    def parse(self, text: str) -> str:
        return text

    def describe(self) -> str:
        return "string"


@dataclass(frozen=True)
class Path(OptionType):
    """An absolute path."""

    def parse(self, text: str) -> str:
        if not text.startswith("/"):
            raise ValueError(f"'{text}' is not an absolute path")
        return text

    def describe(self) -> str:
        return "absolute path"


@dataclass(frozen=True)
class StrList(OptionType):
    """A comma-separated list of words (hosts, address patterns, subvolume names)."""

    def parse(self, text: str) -> tuple[str, ...]:
        items = tuple(part.strip() for part in text.split(","))
        if not all(items):
            raise ValueError(f"'{text}' has an empty item in its comma-separated list")
        return items

    def describe(self) -> str:
        return "comma-separated list"


def _describe_range(lo: Any, hi: Any) -> str:
    if lo is None and hi is None:
        return ""
    return f" [{'' if lo is None else lo}..{'' if hi is None else hi}]"


@dataclass(frozen=True)
class Option:
    """One option of a translator: key (may be an fnmatch pattern), type, default and help.

    `default` is written as a volfile would write it and parsed with `type`, so listings show
    exactly what a user may type. `aliases` are older key names accepted for the same option.
    """

    key: str
    type: OptionType
    default: str | None = None
    help: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    required: bool = False

    @property
    def is_pattern(self) -> bool:
        return any(c in self.key for c in "*?[")

    def matches(self, key: str) -> bool:
        names = (self.key, *self.aliases)
        if self.is_pattern:
            return any(fnmatch.fnmatchcase(key, name) for name in names)
        return key in names
