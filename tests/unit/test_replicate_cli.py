"""Unit tests of `glusterpy heal`, run in-process on a volfile whose replicate sits directly
on two local brick stacks (posix -> index -> locks), so no daemon or network is needed.

A pending change is made with the volume itself (a stack built in the test with one child
down), then the CLI is asked about it through the volfile.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from test_replicate import Flaky, create_file

from glusterpy.cli.main import main
from glusterpy.graph import Graph
from glusterpy.volfile.parse import parse_file
from glusterpy.xlator import ROOT_GFID, Event


def write_volfile(tmp_path: Path, top: str = "vol") -> Path:
    text = []
    for i in range(2):
        directory = tmp_path / f"brick{i}"
        directory.mkdir(exist_ok=True)
        text += [
            f"volume posix{i}\n  type storage/posix\n  option directory {directory}\nend-volume",
            f"volume index{i}\n  type features/index\n"
            f"  option index-base {directory}/.glusterfs/indices\n  subvolumes posix{i}\n"
            "end-volume",
            f"volume vol-client-{i}\n  type features/locks\n  subvolumes index{i}\nend-volume",
        ]
    if top == "vol":
        text.append(
            "volume vol\n  type cluster/replicate\n  option self-heal-daemon off\n"
            "  subvolumes vol-client-0 vol-client-1\nend-volume"
        )
    path = tmp_path / "client.vol"
    path.write_text("\n".join(text) + "\n")
    return path


def leave_pending_change(volfile: Path) -> None:
    """Write a file while child 1 is down (a test wrapper hides it), and stop."""
    graph = Graph.build(parse_file(volfile))
    afr = graph.translators["vol"]
    original = afr.children[1]
    hidden = Flaky("hide-1", [original])

    async def body() -> None:
        async with graph.running():
            hidden.down = True
            afr.children[1] = hidden
            afr.notify(Event.CHILD_DOWN, hidden)
            await create_file(afr, ROOT_GFID, b"mail", b"pending on brick 1")
            afr.children[1] = original

    trio.run(body)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_heal_info_on_a_clean_volume_says_nothing_pending(tmp_path, capsys):
    volfile = write_volfile(tmp_path)
    code, out, _ = run_cli(capsys, "heal", "info", "-f", str(volfile))
    assert code == 0
    assert "Brick vol-client-0" in out and "Brick vol-client-1" in out
    assert out.strip().endswith("Nothing pending heal.")


def test_heal_info_lists_pending_entries_and_heal_full_heals_them(tmp_path, capsys):
    volfile = write_volfile(tmp_path)
    leave_pending_change(volfile)
    assert not (tmp_path / "brick1" / "mail").exists()

    code, out, _ = run_cli(capsys, "heal", "info", "-f", str(volfile))
    assert code == 0
    assert "  /\n" in out and "  /mail\n" in out, out
    assert "2 entries pending heal" in out

    code, out, _ = run_cli(capsys, "heal", "full", "-f", str(volfile))
    assert code == 0, out
    assert "Nothing pending heal." in out
    assert (tmp_path / "brick1" / "mail").read_bytes() == b"pending on brick 1"
    assert os.getxattr(tmp_path / "brick1" / "mail", "trusted.gfid") == os.getxattr(
        tmp_path / "brick0" / "mail", "trusted.gfid"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["info"], "no cluster/replicate volume to heal"),
        (["split-brain", "source-brick", "nosuch"], "has no brick 'nosuch'"),
    ],
)
def test_heal_user_errors_are_one_line(tmp_path, capsys, args, message):
    volfile = write_volfile(tmp_path, top="vol" if args[0] != "info" else "none")
    code, out, err = run_cli(capsys, "heal", *args, "-f", str(volfile))
    assert code == 2
    assert message in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_heal_names_a_missing_volfile(tmp_path, capsys):
    code, _, err = run_cli(capsys, "heal", "info", "-f", str(tmp_path / "missing.vol"))
    assert code == 2 and "missing.vol" in err and "Traceback" not in err
