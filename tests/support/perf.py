"""Stacks of performance translators over a real storage/posix brick, for the unit tests.

`run_stack` builds a graph from volfile text with the real checker (so options get their
declared defaults and bad values are refused as in production), runs `body(top, graph)` under
a timeout, and stops the graph even when the body fails. `ErrorGen` (type test/error-gen) sits
between a translator and posix to make chosen fops fail with a chosen errno on demand; the
disk below stays real.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from glusterpy.graph import Graph
from glusterpy.volfile import registry
from glusterpy.volfile.options import Option, Str
from glusterpy.volfile.parse import parse_text
from glusterpy.xlator import FOPS, ROOT_GFID, Translator, error

TIMEOUT = 20
ROOT = ROOT_GFID


def new_gfid() -> bytes:
    return uuid.uuid4().bytes


class ErrorGen(Translator):
    """Counts every fop in `calls`; a fop named in `failing` fails with `errno_value`, and one
    with an event in `gates` holds the child's answer until that event is set (so that a
    fetch can be kept in flight while another fop changes the object)."""

    type_name = "test/error-gen"
    options_table = (Option("note", Str(), ""),)

    def __init__(self, name: str, children: list[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self.failing: set[str] = set()
        self.errno_value = errno.EIO
        self.gates: dict[str, trio.Event] = {}
        self.calls: list[str] = []

    def count(self, fop: str) -> int:
        return self.calls.count(fop)


def _generated(fop: str) -> Callable[..., Any]:
    async def passing(self: ErrorGen, *args: Any) -> Any:
        self.calls.append(fop)
        if fop in self.failing:
            raise error(self.errno_value, f"{fop} made to fail by {self.name}")
        answer = await getattr(self.child, fop)(*args)
        gate = self.gates.get(fop)
        if gate is not None:
            await gate.wait()
        return answer

    passing.__name__ = fop
    return passing


for _fop in FOPS:
    setattr(ErrorGen, _fop, _generated(_fop))


def stack_volfile(directory: str, *layers: tuple[str, dict[str, Any]], error_gen: bool = False):
    """Volfile text: posix on `directory`, optionally test/error-gen, then `layers` in order
    (each (type, options)); the last layer is the top."""
    parts = [f"volume posix\n type storage/posix\n option directory {directory}\nend-volume\n"]
    below = "posix"
    if error_gen:
        parts.append(f"volume errors\n type test/error-gen\n subvolumes {below}\nend-volume\n")
        below = "errors"
    for index, (kind, options) in enumerate(layers):
        name = f"layer{index}"
        lines = "".join(f" option {key} {value}\n" for key, value in options.items())
        parts.append(f"volume {name}\n type {kind}\n{lines} subvolumes {below}\nend-volume\n")
        below = name
    return "".join(parts)


def run_stack(
    directory: Any,
    body: Callable[[Translator, Graph], Awaitable[Any]],
    *layers: tuple[str, dict[str, Any]],
    error_gen: bool = False,
) -> Any:
    """Build posix (+ error-gen) + `layers` on `directory`, run `body(top, graph)`, stop all."""
    text = stack_volfile(str(directory), *layers, error_gen=error_gen)
    graph = Graph.build(parse_text(text, "perf.vol"))

    async def main() -> Any:
        with trio.fail_after(TIMEOUT):
            async with graph.running():
                return await body(graph.top, graph)

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def create_file(top: Translator, name: bytes, flags: int = os.O_RDWR) -> tuple[int, bytes]:
    """Create `name` in the root; returns (handle, gfid)."""
    fh, iatt = await top.create(ROOT, name, flags, 0o644, 0, 0, new_gfid())
    return fh, iatt.gfid


async def raises_errno(err: int, awaitable: Awaitable[Any]) -> None:
    with pytest.raises(OSError) as info:
        await awaitable
    assert info.value.errno == err, f"expected {errno.errorcode[err]}, got {info.value!r}"


async def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> None:
    """Poll `check` until true; fail after `timeout` seconds (a bound, never a speed test)."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(interval)


def check_errors(text: str) -> list[str]:
    """The checker's messages for volfile `text`."""
    from glusterpy import xlators
    from glusterpy.volfile.check import check_volfile

    xlators.load_all()
    return [str(problem) for problem in check_volfile(parse_text(text, "c.vol"))]


def registered(kind: str) -> registry.TranslatorType:
    from glusterpy import xlators

    xlators.load_all()
    return registry.get(kind)
