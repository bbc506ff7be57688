"""The table of translator types a volfile may name.

Translator modules register themselves here (see `glusterpy.xlator.Translator`); this module
imports no translator. `glusterpy.xlators.load_all()` imports every built translator so that the
table is complete before a volfile is checked or a graph is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glusterpy.volfile.options import Option

# Type names GlusterFS accepts (or accepted in the 2.0 days) that glusterpy does not build yet.
# A volfile naming one is told so plainly instead of getting "unknown type".
KNOWN_UNSUPPORTED = frozenset(
    {
        "cluster/distribute",
        "cluster/nufa",
        "cluster/switch",
        "cluster/unify",
        "cluster/stripe",
        "cluster/ha",
        "cluster/map",
        "cluster/disperse",
        "storage/bdb",
        "performance/open-behind",
        "performance/readdir-ahead",
        "performance/nl-cache",
        "performance/symlink-cache",
        "debug/io-stats",
        "debug/trace",
        "debug/error-gen",
        "features/upcall",
        "features/leases",
        "features/changelog",
        "features/shard",
        "features/utime",
        "features/quota",
        "features/marker",
        "features/access-control",
        "features/filter",
        "features/path-convertor",
        "features/trash",
        "features/read-only",
        "features/worm",
        "encryption/rot-13",
        "mount/fuse",
        "system/posix-acl",
        "mgmt/glusterd",
        "protocol/gfproxy",
    }
)

# Old or alternative names, mapped to the name the code lives under.
ALIASES = {
    "cluster/afr": "cluster/replicate",
    "cluster/dht": "cluster/distribute",
    "features/posix-locks": "features/locks",
    "performance/stat-prefetch": "performance/md-cache",
}


@dataclass(frozen=True)
class TranslatorType:
    """A registered translator type: its canonical name, option table and class."""

    name: str
    options: tuple[Option, ...]
    factory: Any

    def find_option(self, key: str) -> Option | None:
        for option in self.options:
            if not option.is_pattern and option.matches(key):
                return option
        for option in self.options:
            if option.is_pattern and option.matches(key):
                return option
        return None


class UnknownType(LookupError):
    """A volfile names a type that is not registered; the message says why."""


_types: dict[str, TranslatorType] = {}


def register(name: str, options: tuple[Option, ...], factory: Any) -> None:
    if name in _types:
        raise ValueError(f"translator type {name} registered twice")
    _types[name] = TranslatorType(name, tuple(options), factory)


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def get(name: str) -> TranslatorType:
    """The registered type for `name` (aliases allowed), or UnknownType with a clear reason."""
    real = canonical(name)
    if real in _types:
        return _types[real]
    if real in KNOWN_UNSUPPORTED:
        raise UnknownType(
            f"type '{name}' is a GlusterFS translator that glusterpy does not support yet"
        )
    raise UnknownType(f"type '{name}' is not a known translator type")


def registered() -> list[str]:
    return sorted(_types)
