"""`glusterpy volfile check|options|render`, called through the CLI's main()."""

import subprocess
import sys
from pathlib import Path

import pytest

from glusterpy import xlators
from glusterpy.cli.main import main
from glusterpy.volfile import registry
from glusterpy.volfile.options import Bool, Int, Option, Size
from glusterpy.volfile.options import Path as PathType
from glusterpy.volfile.parse import parse_file
from glusterpy.xlator import Translator

TOP = Path(__file__).resolve().parents[2]
EXAMPLES = TOP / "examples"
CONSOLE_SCRIPT = Path(sys.executable).parent / "glusterpy"


class CliStore(Translator):
    """A test-only type whose option table the CLI lists."""

    type_name = "test/cli-store"
    options_table = (
        Option("directory", PathType(), required=True, help="the directory to serve"),
        Option("thread-count", Int(min=2, max=256), default="16", help="worker threads"),
        Option("cache-size", Size(), default="1MB", aliases=("window-size",)),
        Option("nodelay", Bool()),
    )


class CliStack(Translator):
    """A test-only type with no options."""

    type_name = "test/cli-stack"


GOOD = "volume s\n type test/cli-store\n option directory /b\nend-volume\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_ok_prints_one_line_per_file(tmp_path, capsys):
    first = write(tmp_path, "one.vol", GOOD)
    second = write(
        tmp_path, "two.vol", GOOD + "volume t type test/cli-stack subvolumes s end-volume"
    )

    assert main(["volfile", "check", first, second]) == 0

    assert capsys.readouterr().out == f"{first}: ok\n{second}: ok\n"


def test_check_prints_every_problem_and_exits_1(tmp_path, capsys):
    bad = write(
        tmp_path,
        "bad.vol",
        "volume s\n type test/cli-store\n option thread-count 999\n option colour red\nend-volume\n"
        "volume r\n type cluster/unify\n subvolumes s\nend-volume\n",
    )
    good = write(tmp_path, "good.vol", GOOD)

    assert main(["volfile", "check", bad, good]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{bad}:3: volume 's': option 'thread-count' expects integer")
    assert lines[1].startswith(f"{bad}:4: volume 's': unknown option 'colour'")
    assert lines[2] == f"{bad}:1: volume 's': option 'directory' (absolute path) is required"
    assert lines[3] == (
        f"{bad}:7: volume 'r': type 'cluster/unify' is a GlusterFS translator "
        "that glusterpy does not support yet"
    )
    assert lines[4:] == [f"{good}: ok"]


def test_check_reports_syntax_errors_and_missing_files(tmp_path, capsys):
    broken = write(tmp_path, "broken.vol", "volume s\n type test/cli-store\n option directory\n")
    missing = str(tmp_path / "missing.vol")

    assert main(["volfile", "check", broken, missing]) == 1

    assert capsys.readouterr().out.splitlines() == [
        f"{broken}:4: volume 's': option 'directory' has no value, found the end of the file",
        f"{missing}:1: cannot read the volfile: No such file or directory",
    ]


def test_check_refuses_backticks_without_running_them(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = write(
        tmp_path,
        "tick.vol",
        f"volume s type test/cli-store\n option directory `touch {marker}`\nend-volume",
    )

    assert main(["volfile", "check", path]) == 1

    assert "backtick command substitution is not supported" in capsys.readouterr().out
    assert not marker.exists()


def test_options_lists_the_table(capsys):
    assert main(["volfile", "options", "test/cli-store"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "test/cli-store options"
    assert lines[1].split() == ["KEY", "TYPE", "DEFAULT", "HELP"]
    assert " ".join(lines[2].split()) == "directory absolute path (required) the directory to serve"
    assert lines[3].split() == ["thread-count", "integer", "[2..256]", "16", "worker", "threads"]
    assert lines[4].split() == ["cache-size|window-size", "size", "1MB"]
    assert lines[5].split() == ["nodelay", "boolean", "-"]
    # The columns line up: every row's type starts where the header's TYPE does.
    column = lines[1].index("TYPE")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[2:])


def test_options_of_a_type_without_options(capsys):
    assert main(["volfile", "options", "test/cli-stack"]) == 0

    assert capsys.readouterr().out == "test/cli-stack options: none\n"


def test_options_of_an_unknown_or_unsupported_type_is_a_user_error(capsys):
    assert main(["volfile", "options", "no/such"]) == 2
    assert (
        capsys.readouterr().err
        == "glusterpy: error: type 'no/such' is not a known translator type\n"
    )

    assert main(["volfile", "options", "storage/bdb"]) == 2
    assert capsys.readouterr().err == (
        "glusterpy: error: type 'storage/bdb' is a GlusterFS translator "
        "that glusterpy does not support yet\n"
    )


def test_render_prints_canonical_form(tmp_path, capsys):
    path = write(
        tmp_path, "messy.vol", 'volume s type test/cli-store # c\noption directory "/b" end-volume'
    )

    assert main(["volfile", "render", path]) == 0

    assert (
        capsys.readouterr().out
        == "volume s\n    type test/cli-store\n    option directory /b\nend-volume\n"
    )


def test_render_of_a_broken_file_is_one_error_line(tmp_path, capsys):
    path = write(tmp_path, "broken.vol", "volume s\n type t\n")

    assert main(["volfile", "render", path]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    message = "volume starting at line 1 has no 'end-volume'"
    assert captured.err == f"glusterpy: error: {path}:3: volume 's': {message}\n"


def test_reference_client_names_the_translators_not_built():
    if not CONSOLE_SCRIPT.exists():
        pytest.fail(f"{CONSOLE_SCRIPT} is missing: run 'bash scripts/setup-env'")
    path = str(EXAMPLES / "client-2.0-reference.vol")
    xlators.load_all()
    not_built = [
        (volume.type_line, volume.name, volume.type)
        for volume in parse_file(path).volumes
        if registry.canonical(volume.type) not in registry.registered()
    ]

    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "volfile", "check", path],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TOP,
    )

    # The reference uses cluster/distribute, which glusterpy does not build.
    assert (53, "distribute", "cluster/distribute") in not_built
    assert result.returncode == 1
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{path}:{line}: volume '{name}': type '{kind}' is a GlusterFS translator "
        "that glusterpy does not support yet"
        for line, name, kind in not_built
    ]


def test_options_accepts_a_type_alias(monkeypatch, capsys):
    monkeypatch.setitem(registry.ALIASES, "test/cli-old-store", "test/cli-store")

    assert main(["volfile", "options", "test/cli-old-store"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "test/cli-old-store is another name for test/cli-store",
        "test/cli-store options",
    ]


def test_the_reference_brick_and_client_volfiles_check_ok(capsys):
    brick, client = str(EXAMPLES / "brick.vol"), str(EXAMPLES / "client.vol")

    assert main(["volfile", "check", brick, client]) == 0

    assert capsys.readouterr().out == f"{brick}: ok\n{client}: ok\n"
