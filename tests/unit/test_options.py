"""Option value types: what each accepts, what it refuses and how it describes itself."""

import pytest

from glusterpy import xlators
from glusterpy.volfile import registry
from glusterpy.volfile.options import (
    Bool,
    Enum,
    Float,
    Int,
    Option,
    Path,
    Percent,
    Size,
    Str,
    StrList,
)


@pytest.mark.parametrize(
    "text, value",
    [
        ("0", 0),
        ("128", 128),
        ("128B", 128),
        ("128KB", 128 << 10),
        ("128kb", 128 << 10),
        ("64kB", 64 << 10),
        ("4k", 4 << 10),
        ("1MB", 1 << 20),
        ("1mb", 1 << 20),
        ("32M", 32 << 20),
        ("1GB", 1 << 30),
        ("6gb", 6 << 30),
        ("2TB", 2 << 40),
        ("1PB", 1 << 50),
    ],
)
def test_size_accepts_binary_suffixes(text, value):
    assert Size().parse(text) == value


@pytest.mark.parametrize("text", ["", "MB", "1.5MB", "-1MB", "1 XB", "1MiB", "ten", "1MB2"])
def test_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="is not a size"):
        Size().parse(text)


def test_size_range_is_checked_after_the_suffix():
    size = Size(min=512 << 10, max=1 << 30)

    assert size.parse("512KB") == 512 << 10
    assert size.parse("1GB") == 1 << 30
    with pytest.raises(ValueError, match="below the minimum"):
        size.parse("511KB")
    with pytest.raises(ValueError, match="above the maximum"):
        size.parse("2GB")
    assert size.describe() == f"size [{512 << 10}..{1 << 30}]"


@pytest.mark.parametrize("text", ["1", "on", "yes", "true", "enable", "ON", "Yes", "TRUE"])
def test_bool_true_words(text):
    assert Bool().parse(text) is True


@pytest.mark.parametrize("text", ["0", "off", "no", "false", "disable", "OFF", "No", "Disable"])
def test_bool_false_words(text):
    assert Bool().parse(text) is False


@pytest.mark.parametrize("text", ["", "2", "y", "enabled", "onn", "nope"])
def test_bool_refuses_other_words_and_lists_the_accepted_ones(text):
    with pytest.raises(ValueError, match="is not a boolean .on/off, yes/no, true/false"):
        Bool().parse(text)


@pytest.mark.parametrize(
    "text, value", [("5%", 5.0), ("10", 10.0), ("0%", 0.0), ("100%", 100.0), ("12.5%", 12.5)]
)
def test_percent_accepts_numbers_with_or_without_the_sign(text, value):
    assert Percent().parse(text) == value


@pytest.mark.parametrize(
    "text, words",
    [
        ("101%", "above the maximum"),
        ("-1%", "not a percentage"),
        ("%", "not a percentage"),
        ("ten%", "not a percentage"),
    ],
)
def test_percent_refuses_out_of_range_and_garbage(text, words):
    with pytest.raises(ValueError, match=words):
        Percent().parse(text)


@pytest.mark.parametrize("text, value", [("8", 8), ("-3", -3), ("0x10", 16), ("0755", 0o755)])
def test_int_reads_decimal_hex_and_octal_like_strtol(text, value):
    assert Int().parse(text) == value


def test_int_range_is_inclusive_and_named_in_errors():
    threads = Int(min=2, max=256)

    assert threads.parse("2") == 2
    assert threads.parse("256") == 256
    with pytest.raises(ValueError, match="1 is below the minimum 2"):
        threads.parse("1")
    with pytest.raises(ValueError, match="257 is above the maximum 256"):
        threads.parse("257")
    assert threads.describe() == "integer [2..256]"
    assert Int(min=0).describe() == "integer [0..]"
    assert Int().describe() == "integer"


@pytest.mark.parametrize("text", ["", "eight", "8.0", "08", "1e3"])
def test_int_refuses_non_integers(text):
    with pytest.raises(ValueError, match="is not an integer"):
        Int().parse(text)


def test_float_accepts_numbers_in_range_and_refuses_non_finite():
    timeout = Float(min=0, max=60)

    assert timeout.parse("1.5") == 1.5
    assert timeout.parse("60") == 60.0
    with pytest.raises(ValueError, match="above the maximum"):
        timeout.parse("61")
    for text in ("nan", "inf", "-inf"):
        with pytest.raises(ValueError, match="finite"):
            timeout.parse(text)
    with pytest.raises(ValueError, match="is not a number"):
        timeout.parse("soon")


def test_enum_accepts_only_its_choices_and_lists_them():
    scheme = Enum(("full", "granular"))

    assert scheme.parse("granular") == "granular"
    with pytest.raises(ValueError, match="'partial' is not one of: full, granular"):
        scheme.parse("partial")
    assert scheme.describe() == "one of full|granular"


def test_str_path_and_strlist():
    assert Str().parse("any thing") == "any thing"
    assert Path().parse("/export/brick1") == "/export/brick1"
    with pytest.raises(ValueError, match="not an absolute path"):
        Path().parse("export/brick1")
    assert StrList().parse("10.0.0.*, 127.0.0.1") == ("10.0.0.*", "127.0.0.1")
    with pytest.raises(ValueError, match="empty item"):
        StrList().parse("a,,b")


def test_option_matches_its_key_aliases_and_patterns():
    plain = Option("cache-size", Size(), aliases=("window-size",))
    pattern = Option("auth.addr.*.allow", StrList())

    assert plain.matches("cache-size") and plain.matches("window-size")
    assert not plain.matches("cache-size2") and not plain.is_pattern
    assert pattern.is_pattern
    assert pattern.matches("auth.addr.brick1.allow")
    assert not pattern.matches("auth.addr.brick1.reject")


def test_every_registered_default_parses_with_its_own_type():
    xlators.load_all()

    for name in registry.registered():
        for option in registry.get(name).options:
            if option.default is not None:
                option.type.parse(option.default)
