"""The volfile parser: the GlusterFS grammar, and each kind of error with its line number."""

import pytest

from glusterpy.volfile.model import VolfileError
from glusterpy.volfile.parse import BACKTICK_MESSAGE, parse_file, parse_text

BRICK = """\
# a brick
volume posix1
  type storage/posix
  option directory /export/brick1   # where files live
end-volume
volume locks1
    type features/locks
    subvolumes posix1
end-volume
volume brick1
    type performance/io-threads
    option thread-count 8
    subvolumes locks1
    option idle-time 5
end-volume
"""


def error_of(text: str, path: str = "t.vol") -> VolfileError:
    with pytest.raises(VolfileError) as info:
        parse_text(text, path)
    return info.value


def test_parses_volumes_in_order_with_lines():
    volfile = parse_text(BRICK, "brick.vol")

    assert [v.name for v in volfile.volumes] == ["posix1", "locks1", "brick1"]
    posix, locks, brick = volfile.volumes
    assert (posix.type, posix.line, posix.type_line) == ("storage/posix", 2, 3)
    assert posix.options == {"directory": "/export/brick1"}
    assert posix.option_lines == {"directory": 4}
    assert (locks.subvolumes, locks.subvolumes_line) == (["posix1"], 8)
    assert brick.options == {"thread-count": "8", "idle-time": "5"}
    assert brick.option_lines == {"thread-count": 12, "idle-time": 14}
    assert volfile.top().name == "brick1"
    assert volfile.top("locks1") is locks


def test_newlines_carry_no_meaning():
    volfile = parse_text("volume a type t option k\n v end-volume volume b\ntype t\nend-volume")

    assert volfile.volumes[0].options == {"k": "v"}
    assert volfile.volumes[0].option_lines == {"k": 1}
    assert volfile.volumes[1].type_line == 3


def test_quoted_strings_take_escapes_and_keywords():
    text = 'volume "my vol" type t option k "a \\"b\\" \\\\ c" option w "type" end-volume'
    volume = parse_text(text).volumes[0]

    assert volume.name == "my vol"
    assert volume.options == {"k": 'a "b" \\ c', "w": "type"}


def test_second_quoted_string_does_not_inherit_the_first():
    volume = parse_text('volume a type t option x "one" option y "two" end-volume').volumes[0]

    assert volume.options == {"x": "one", "y": "two"}


def test_hash_starts_a_comment_only_at_token_start():
    volume = parse_text("volume a type t option k v#1 # comment\n option j #x\n w end-volume")

    assert volume.volumes[0].options == {"k": "v#1", "j": "w"}


def test_longer_words_containing_keywords_are_words():
    volume = parse_text("volume volumes type t option transport-type tcp end-volume").volumes[0]

    assert volume.name == "volumes"
    assert volume.options == {"transport-type": "tcp"}


def test_names_may_contain_slashes():
    volfile = parse_text("volume /data/brick1 type debug/io-stats end-volume")

    assert volfile.volumes[0].name == "/data/brick1"


def test_subvolumes_with_capital_s_is_the_keyword():
    text = "volume a type t end-volume volume b type t subvolumeS a end-volume"

    assert parse_text(text).volumes[1].subvolumes == ["a"]


def test_type_only_volume_is_legal():
    assert parse_text("volume a type storage/posix end-volume").volumes[0].options == {}


@pytest.mark.parametrize(
    "text, line, volume, words",
    [
        ("", 1, None, "no volume is defined"),
        ("# only a comment\n\n", 3, None, "no volume is defined"),
        ("volume a\n option k v\n type t\nend-volume", 2, "a", "'type' must come first"),
        ("volume a\n type t\n type u\nend-volume", 3, "a", "'type' given again (first at line 2)"),
        (
            "volume a type t\n option k\nend-volume",
            3,
            "a",
            "option 'k' has no value, found keyword 'end-volume'",
        ),
        ("volume a type t option k type end-volume", 1, "a", "quote a keyword"),
        (
            "volume a type t end-volume\nvolume b type t\n subvolumes a\n subvolumes a\nend-volume",
            4,
            "b",
            "duplicate 'subvolumes' line (first at line 3)",
        ),
        (
            "volume a type t\n\n subvolumes b\nend-volume",
            3,
            "a",
            "subvolume 'b' is not defined before it is used",
        ),
        ("volume a type t\n subvolumes\n a end-volume", 3, "a", "own subvolume"),
        (
            "volume a type t end-volume\nvolume b type t subvolumes a\n a end-volume",
            3,
            "b",
            "subvolume 'a' listed twice",
        ),
        ("volume a type t\nsubvolumes\nend-volume", 3, "a", "expected a subvolume name"),
        (
            "volume a type t end-volume\n\nvolume a type t end-volume",
            3,
            None,
            "volume 'a' defined again (first at line 1)",
        ),
        (
            "volume a type t\n option k v\n option k w\nend-volume",
            3,
            "a",
            "option 'k' given twice (first at line 2)",
        ),
        ("volume a\n type t\n option k v\n", 4, "a", "has no 'end-volume'"),
        ("volume a type t\nvolume b type t end-volume", 2, "a", "'end-volume' missing"),
        ("volume a type t end-volume\n end-volume", 2, None, "expected 'volume'"),
        ("Volume a type t end-volume", 1, None, "expected 'volume', found 'Volume'"),
        ("volume a Type t end-volume", 1, "a", "'type' must come first, found 'Type'"),
        ("volume a type t\n subvolume b\nend-volume", 2, "a", "found 'subvolume'"),
        ("volume a type t\n option k End-Volume", 2, "a", "has no 'end-volume'"),
        ("volume a type t option k v extra end-volume", 1, "a", "found 'extra'"),
        ('volume a type t\n option k "v\nw" end-volume', 2, "a", "may not span lines"),
        ('volume a type t\n\n option k "v end-volume', 3, "a", "unterminated quoted"),
        ('volume a type t\n option k "v', 2, "a", "unterminated quoted string"),
        ('volume a type t\n option k "v\\\nw" end-volume', 2, "a", "backslash at the end"),
        ("volume a type t\n option k v\\w end-volume", 2, "a", "backslash outside"),
        ("volume\nend-volume", 2, None, "expected a volume name"),
        ("volume a type\nend-volume", 2, "a", "expected a translator type"),
    ],
)
def test_each_error_names_file_line_and_volume(text, line, volume, words):
    error = error_of(text)

    assert error.path == "t.vol"
    assert error.line == line
    assert error.volume == volume
    assert words in error.message
    assert str(error).startswith(f"t.vol:{line}: ")
    if volume is not None:
        assert str(error).startswith(f"t.vol:{line}: volume '{volume}': ")


@pytest.mark.parametrize(
    "text, line, volume",
    [
        ("volume a type t\n option directory `mktemp -d` end-volume", 2, "a"),
        ('volume a type t\n\n option k "`touch x`" end-volume', 3, "a"),
        ("volume a type t option k x`id` end-volume", 1, "a"),
        (
            "# `touch x` would run in GlusterFS even in a comment\nvolume a type t end-volume",
            1,
            None,
        ),
        ("volume a type t option k `unterminated\nend-volume", 1, "a"),
        ("volume a`id` type t end-volume", 1, None),
    ],
)
def test_backticks_are_refused(text, line, volume):
    error = error_of(text)

    assert error.line == line
    assert error.volume == volume
    assert error.message == BACKTICK_MESSAGE


def test_backticks_never_run(tmp_path):
    marker = tmp_path / "ran"
    text = f'volume a type t option k `touch {marker}` option j "`touch {marker}`" end-volume'

    with pytest.raises(VolfileError):
        parse_text(text)
    assert not marker.exists()


def test_an_escaped_backtick_in_a_quoted_string_is_a_plain_character():
    volume = parse_text('volume a type t option k "a\\`b" end-volume').volumes[0]

    assert volume.options == {"k": "a`b"}


def test_parse_file_reads_a_file(tmp_path):
    path = tmp_path / "brick.vol"
    path.write_text(BRICK)

    volfile = parse_file(path)

    assert volfile.path == str(path)
    assert len(volfile.volumes) == 3


def test_parse_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.vol"
    path.write_text("volume a\n type t\n option k\nend-volume\n")

    with pytest.raises(VolfileError, match=rf"^{path}:4: volume 'a': option 'k' has no value"):
        parse_file(path)


def test_parse_file_missing_file_is_a_volfile_error(tmp_path):
    path = tmp_path / "missing.vol"

    with pytest.raises(VolfileError, match="cannot read the volfile: No such file"):
        parse_file(path)


def test_parse_file_unreadable_file_is_a_volfile_error(tmp_path):
    with pytest.raises(VolfileError, match="cannot read the volfile"):
        parse_file(tmp_path)


def test_parse_file_rejects_non_utf8_with_its_line(tmp_path):
    path = tmp_path / "latin1.vol"
    path.write_bytes(b"volume a\n type t\n option k caf\xe9\nend-volume\n")

    with pytest.raises(VolfileError) as info:
        parse_file(path)
    assert info.value.line == 3
    assert "not UTF-8" in info.value.message


def test_crlf_line_endings_and_tabs_are_blanks():
    volfile = parse_text("volume a\r\n\ttype t\r\n\toption k v\r\nend-volume\r\n")

    assert volfile.volumes[0].options == {"k": "v"}
    assert volfile.volumes[0].option_lines == {"k": 3}
