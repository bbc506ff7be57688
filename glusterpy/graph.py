"""A running translator graph, built from a parsed volfile.

`Graph.build` checks every volume's options against its type's declaration and instantiates the
translators in definition order, so each one's children exist before it. `Graph.running` starts
them children first inside one nursery and stops them parents first; the graph watches its top
translator's events so callers can wait until the volume is up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from glusterpy import xlators
from glusterpy.volfile import check, registry
from glusterpy.volfile.model import Volfile, VolfileError
from glusterpy.xlator import Event, Translator

log = logging.getLogger(__name__)


class Graph:
    """Translators by name, in definition order, and the one at the top."""

    def __init__(self, translators: dict[str, Translator], top: Translator):
        self.translators = translators
        self.top = top
        self.is_up = False
        self._up_changed = trio.Event()
        # The graph listens to its top as if it were a parent translator.
        top.parents.append(self)  # type: ignore[arg-type]

    @classmethod
    def build(cls, volfile: Volfile, top: str | None = None) -> Graph:
        xlators.load_all()
        top_def = volfile.top(top)
        built: dict[str, Translator] = {}
        for volume in volfile.volumes:
            try:
                kind = registry.get(volume.type)
            except registry.UnknownType as e:
                line = volume.type_line or volume.line
                raise VolfileError(volfile.path, line, str(e), volume.name) from None
            options = check.resolve_options(volfile, volume, kind)
            children = [built[name] for name in volume.subvolumes]
            try:
                built[volume.name] = kind.factory(volume.name, children, options)
            except (ValueError, OSError) as e:
                raise VolfileError(volfile.path, volume.line, str(e), volume.name) from None
        return cls(built, built[top_def.name])

    def notify(self, event: Event, child: Translator) -> None:
        self.is_up = event is Event.CHILD_UP
        self._up_changed.set()
        self._up_changed = trio.Event()

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the top reports up; False when `timeout` seconds pass first."""
        with trio.move_on_after(timeout):
            while not self.is_up:
                await self._up_changed.wait()
        return self.is_up

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Graph]:
        async with trio.open_nursery() as nursery:
            started: list[Translator] = []
            try:
                for translator in self.translators.values():
                    await translator.start(nursery)
                    started.append(translator)
                yield self
            finally:
                with trio.CancelScope(shield=True):
                    for translator in reversed(started):
                        try:
                            await translator.stop()
                        except Exception:
                            log.exception("stopping %s failed", translator.name)
                nursery.cancel_scope.cancel()
