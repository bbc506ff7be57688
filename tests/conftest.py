"""Fixtures shared by the test suites: brick daemons and FUSE mounts that always clean up.

`brick_factory` (from tests/support/bricks.py) starts glusterpyd processes; `mount_factory`
mounts a client volfile with `glusterpy mount --foreground` in a subprocess. Both stop what
they started in teardown, by pid and with a lazy unmount, even when the test failed.

The FUSE binding the mounts use is pyfuse3 unless GLUSTERPY_TEST_BINDING names another
(`kernel`), so the same suite runs on either binding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import bricks
from tests.support.mounts import Mount

brick_factory = bricks.brick_factory
BINDING = os.environ.get("GLUSTERPY_TEST_BINDING", "pyfuse3")


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """make(volfile, name="mnt", options="") -> a started Mount; all are stopped afterwards."""
    made: list[Mount] = []

    def make(volfile: Path, name: str = "mnt", options: str = "", **kwargs) -> Mount:
        options = ",".join(filter(None, [f"binding={BINDING}", options]))
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
