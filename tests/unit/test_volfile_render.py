"""The renderer: canonical form, quoting, and parse(render(v)) giving the same graph."""

import random
from pathlib import Path

import pytest

from glusterpy.volfile.model import Volfile, VolumeDef
from glusterpy.volfile.parse import KEYWORDS, parse_file, parse_text
from glusterpy.volfile.render import quote, render

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def graph_of(volfile: Volfile) -> list[tuple]:
    """What a volfile means: names, types, options in order, and subvolumes."""
    return [(v.name, v.type, list(v.options.items()), v.subvolumes) for v in volfile.volumes]


def test_canonical_form():
    text = (
        "# comment\nvolume p type storage/posix option directory /b end-volume\n"
        "volume io\n\ttype performance/io-threads\n  subvolumes p\n  option thread-count 8 "
        'option name "two words" end-volume'
    )

    assert render(parse_text(text)) == (
        "volume p\n"
        "    type storage/posix\n"
        "    option directory /b\n"
        "end-volume\n"
        "\n"
        "volume io\n"
        "    type performance/io-threads\n"
        "    option thread-count 8\n"
        '    option name "two words"\n'
        "    subvolumes p\n"
        "end-volume\n"
    )


@pytest.mark.parametrize(
    "word, written",
    [
        ("plain", "plain"),
        ("/data/brick1", "/data/brick1"),
        ("auth.addr.*.allow", "auth.addr.*.allow"),
        ("two words", '"two words"'),
        ("tab\there", '"tab\there"'),
        ("#hash", '"#hash"'),
        ("a#b", '"a#b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("tick`", '"tick\\`"'),
        ("type", '"type"'),
        ("end-volume", '"end-volume"'),
        ("", '""'),
    ],
)
def test_quote(word, written):
    assert quote(word) == written


def test_quote_refuses_a_newline():
    with pytest.raises(ValueError, match="newline"):
        quote("two\nlines")


@pytest.mark.parametrize("name", ["brick.vol", "client.vol", "client-2.0-reference.vol"])
def test_examples_round_trip(name):
    volfile = parse_file(EXAMPLES / name)

    rendered = render(volfile)

    assert graph_of(parse_text(rendered)) == graph_of(volfile)
    assert render(parse_text(rendered)) == rendered


# Pieces for generated words: every character class the lexer treats specially, keywords,
# and ordinary text.
_PIECES = [*"aZ7-./*_:,é日=%", *' \t\r#"\\`', *sorted(KEYWORDS)]


def random_word(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 5)))


def random_volfile(rng: random.Random) -> Volfile:
    volumes: list[VolumeDef] = []
    names: set[str] = set()
    for line in range(rng.randint(1, 6)):
        name = random_word(rng)
        while name in names:
            name += "x"
        names.add(name)
        volume = VolumeDef(name=name, type=random_word(rng), line=line + 1)
        for _ in range(rng.randint(0, 4)):
            volume.options.setdefault(random_word(rng), random_word(rng))
        earlier = [v.name for v in volumes]
        volume.subvolumes = rng.sample(earlier, rng.randint(0, len(earlier)))
        volumes.append(volume)
    return Volfile("<generated>", volumes)


@pytest.mark.parametrize("seed", range(40))
def test_generated_volfiles_round_trip(seed):
    volfile = random_volfile(random.Random(seed))

    reparsed = parse_text(render(volfile))

    assert graph_of(reparsed) == graph_of(volfile)
