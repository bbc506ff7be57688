"""The parsed form of a volfile: volumes in definition order, with where each thing was written.

Nothing here knows translator types; checking options against a type's declaration is
`glusterpy.volfile.check`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class VolfileError(Exception):
    """A problem in a volfile, located by file and line (and volume when there is one)."""

    def __init__(self, path: str, line: int, message: str, volume: str | None = None):
        self.path = path
        self.line = line
        self.volume = volume
        self.message = message
        where = f"{path}:{line}"
        if volume is not None:
            where += f": volume '{volume}'"
        super().__init__(f"{where}: {message}")


@dataclass
class VolumeDef:
    """One `volume ... end-volume` block as written."""

    name: str
    type: str
    line: int
    type_line: int = 0
    options: dict[str, str] = field(default_factory=dict)
    option_lines: dict[str, int] = field(default_factory=dict)
    subvolumes: list[str] = field(default_factory=list)
    subvolumes_line: int = 0


@dataclass
class Volfile:
    """A whole volfile: its volumes in the order they were defined (children before users)."""

    path: str
    volumes: list[VolumeDef]

    def volume(self, name: str) -> VolumeDef:
        for volume in self.volumes:
            if volume.name == name:
                return volume
        raise KeyError(name)

    def top(self, name: str | None = None) -> VolumeDef:
        """The graph's top: the named volume, else the last one defined."""
        if not self.volumes:
            raise VolfileError(self.path, 1, "no volume is defined")
        if name is None:
            return self.volumes[-1]
        try:
            return self.volume(name)
        except KeyError:
            message = f"no volume named '{name}' to use as the top"
            raise VolfileError(self.path, 1, message) from None
