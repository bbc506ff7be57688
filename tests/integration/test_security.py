"""Nothing outside the brick directory is read or written through a mount.

The brick lives in base/export; a canary directory sits beside it (base/canary), reachable from
the brick only by a relative symlink that climbs out. Symlinks are planted in the brick by hand
(as an attacker with write access to some brick path might), then the mount works on them; the
canary's names, contents, modes, owners and times must be exactly as before.

The mount point is nested deeper (base/m/mnt) so that the client kernel, which resolves symlinks
itself, lands somewhere harmless and different from the canary when it follows them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.support import bricks

pytestmark = pytest.mark.integration
ALL_BINDINGS = True


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything an escape could change under `root`, without following symlinks."""
    state = {}
    for directory, names, files in os.walk(root):
        for name in [".", *names, *files]:
            path = Path(directory, name)
            st = os.lstat(path)
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            xattrs = tuple(sorted(os.listxattr(path, follow_symlinks=False)))
            key = str(path.relative_to(root))
            state[key] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content, xattrs)
    return state


@pytest.fixture
def planted(brick_factory, mount_factory, tmp_path):
    brick = brick_factory()
    canary = brick.base / "canary"
    canary.mkdir()
    (canary / "secret").write_bytes(b"must never be read or changed")
    os.chmod(canary / "secret", 0o644)
    export = brick.directory
    os.symlink("../canary", export / "dirlink")
    os.symlink("../canary/secret", export / "filelink")
    os.symlink(str(canary), export / "abslink")
    (export / "sub").mkdir()
    os.symlink("../../canary/secret", export / "sub" / "deeplink")
    before = snapshot(canary)
    volfile = bricks.write_client_volfile(tmp_path / "client.vol", brick.port)
    mount = mount_factory(volfile, "m/mnt")
    mount.brick_dir = export
    yield mount, canary
    assert snapshot(canary) == before


def test_planted_symlinks_are_only_symlinks(planted):
    mount, canary = planted
    for name in ("dirlink", "filelink", "abslink"):
        assert stat.S_ISLNK(os.lstat(mount.path / name).st_mode)
    assert os.readlink(mount.path / "dirlink") == "../canary"
    assert os.readlink(mount.path / "sub" / "deeplink") == "../../canary/secret"
    # Followed by the client's kernel, relative links land beside the mount, not in the canary.
    for path in (mount.path / "filelink", mount.path / "sub" / "deeplink"):
        with pytest.raises(FileNotFoundError):
            path.read_bytes()
    with pytest.raises(FileNotFoundError):
        (mount.path / "dirlink" / "new").write_bytes(b"escape")


def test_metadata_changes_on_planted_links_stay_in_the_brick(planted):
    mount, canary = planted
    for name in ("dirlink", "filelink", "abslink"):
        path = mount.path / name
        os.chown(path, 4321, 4321, follow_symlinks=False)
        os.utime(path, ns=(5_000_000_000, 5_000_000_000), follow_symlinks=False)
        assert os.lstat(mount.path / name).st_uid == 4321
    assert os.lstat(mount.brick_dir / "filelink").st_uid == 4321


def test_renaming_linking_and_removing_planted_links(planted):
    mount, canary = planted
    os.rename(mount.path / "dirlink", mount.path / "sub" / "moved")
    assert os.readlink(mount.path / "sub" / "moved") == "../canary"
    os.link(mount.path / "filelink", mount.path / "hardlink", follow_symlinks=False)
    assert stat.S_ISLNK(os.lstat(mount.path / "hardlink").st_mode)
    for name in ("sub/moved", "filelink", "hardlink", "abslink", "sub/deeplink"):
        os.unlink(mount.path / name)
    assert os.listdir(mount.path / "sub") == []


def test_names_with_dots_stay_inside(planted):
    mount, canary = planted
    for name in ("..a", "a..", "...", ".. ..", "..\\.."):
        (mount.path / name).write_bytes(name.encode())
        assert (mount.brick_dir / name).read_bytes() == name.encode()
    (mount.path / "..d").mkdir()
    (mount.path / "..d" / "..f").write_bytes(b"x")
    assert (mount.brick_dir / "..d" / "..f").read_bytes() == b"x"


def test_brick_internals_are_not_reachable(planted):
    mount, canary = planted
    assert ".glusterfs" not in os.listdir(mount.path)
    with pytest.raises(OSError) as info:
        os.stat(mount.path / ".glusterfs")
    assert info.value.errno in (errno.ENOENT, errno.EPERM, errno.EACCES, errno.EINVAL)
    with pytest.raises(OSError):
        (mount.path / ".glusterfs").mkdir()
