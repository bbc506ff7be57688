"""Fixtures shared by the test suites: brick daemons and FUSE mounts that always clean up.

`brick_factory` (from tests/support/bricks.py) starts glusterpyd processes; `mount_factory`
mounts a client volfile with `glusterpy mount --foreground` in a subprocess. Both stop what
they started in teardown, by pid and with a lazy unmount, even when the test failed.

Mounts use `glusterpy mount`'s default binding. A test module that sets `ALL_BINDINGS = True`
(the core POSIX suite) runs each mounting test once per binding, pyfuse3 and our kernel
session, since both serve users; GLUSTERPY_TEST_BINDINGS (comma-separated) narrows that list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import bricks
from tests.support.mounts import Mount

brick_factory = bricks.brick_factory
BINDINGS = os.environ.get("GLUSTERPY_TEST_BINDINGS", "pyfuse3,kernel").split(",")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "binding" in metafunc.fixturenames and getattr(metafunc.module, "ALL_BINDINGS", False):
        metafunc.parametrize("binding", BINDINGS, indirect=True)


@pytest.fixture
def binding(request) -> str | None:
    """The binding mounts ask for; None leaves `glusterpy mount` its default."""
    return getattr(request, "param", None)


@pytest.fixture
def mount_factory(tmp_path: Path, binding: str | None) -> Iterator[Callable[..., Mount]]:
    """make(volfile, name="mnt", options="") -> a started Mount; all are stopped afterwards."""
    made: list[Mount] = []

    def make(volfile: Path, name: str = "mnt", options: str = "", **kwargs) -> Mount:
        if binding is not None:
            options = ",".join(filter(None, [f"binding={binding}", options]))
        mount = Mount(volfile, tmp_path / name, tmp_path / f"{name}.log", options, **kwargs)
        made.append(mount)
        return mount.start()

    yield make
    for mount in reversed(made):
        mount.stop()


@pytest.fixture
def volume(brick_factory, mount_factory, tmp_path: Path) -> Mount:
    """One brick and one mount of it; `volume.brick` is the Brick."""
    brick = brick_factory()
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    mount = mount_factory(volfile)
    mount.brick = brick  # type: ignore[attr-defined]
    return mount
