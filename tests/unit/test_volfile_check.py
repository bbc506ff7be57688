"""The volfile checker and option resolution, against translator types defined here."""

import pytest
import trio

from glusterpy.graph import Graph
from glusterpy.volfile import registry
from glusterpy.volfile.check import check_volfile, resolve_options
from glusterpy.volfile.model import VolfileError
from glusterpy.volfile.options import Bool, Enum, Int, Option, Path, Percent, Size, Str, StrList
from glusterpy.volfile.parse import parse_text
from glusterpy.xlator import Translator


class SampleStore(Translator):
    """A test-only type with one option of each kind."""

    type_name = "test/check-store"
    options_table = (
        Option("directory", Path(), required=True, help="where to keep things"),
        Option("thread-count", Int(min=2, max=256), default="16"),
        Option(
            "cache-size", Size(min=512 << 10, max=1 << 30), default="1MB", aliases=("window-size",)
        ),
        Option("nodelay", Bool(), default="on"),
        Option("min-free-disk", Percent(), default="10%"),
        Option("transport-type", Enum(("tcp", "unix")), default="tcp"),
        Option("remote-host", Str()),
        Option("auth.addr.*.allow", StrList()),
    )


class SampleStack(Translator):
    """A test-only type with no options, to stack on SampleStore."""

    type_name = "test/check-stack"


def volfile_of(body: str):
    return parse_text(body, "c.vol")


def test_resolve_fills_defaults_canonical_keys_and_patterns():
    volfile = volfile_of(
        "volume s\n"
        " type test/check-store\n"
        " option directory /srv/b\n"
        " option window-size 4MB\n"
        " option nodelay off\n"
        " option auth.addr.b.allow 127.0.0.1,10.*\n"
        "end-volume\n"
    )
    volume = volfile.volumes[0]

    values = resolve_options(volfile, volume, registry.get(volume.type))

    assert values == {
        "directory": "/srv/b",
        "thread-count": 16,
        "cache-size": 4 << 20,
        "nodelay": False,
        "min-free-disk": 10.0,
        "transport-type": "tcp",
        "remote-host": None,
        "auth.addr.b.allow": ("127.0.0.1", "10.*"),
    }


BAD = """\
volume s
    type test/check-store
    option thread-count 1
    option cache-size huge
    option colour blue
    option transport-type udp
    option nodelay maybe
end-volume
volume gone
    type storage/bdb
end-volume
volume odd
    type no/such-type
    subvolumes s
end-volume
volume old
    type cluster/unify
    subvolumes s
end-volume
"""


def test_check_reports_every_problem_in_file_order():
    problems = check_volfile(volfile_of(BAD))

    assert [(p.line, p.volume) for p in problems] == [
        (3, "s"),
        (4, "s"),
        (5, "s"),
        (6, "s"),
        (7, "s"),
        (1, "s"),
        (10, "gone"),
        (13, "odd"),
        (17, "old"),
    ]
    messages = [p.message for p in problems]
    assert messages[0] == "option 'thread-count' expects integer [2..256]: 1 is below the minimum 2"
    assert messages[1].startswith("option 'cache-size' expects size [")
    assert "'huge' is not a size" in messages[1]
    assert messages[2] == (
        "unknown option 'colour' for type test/check-store "
        "(see 'glusterpy volfile options test/check-store')"
    )
    assert (
        messages[3]
        == "option 'transport-type' expects one of tcp|unix: 'udp' is not one of: tcp, unix"
    )
    assert messages[4].startswith("option 'nodelay' expects boolean: 'maybe' is not a boolean")
    assert messages[5] == "option 'directory' (absolute path) is required"
    assert (
        messages[6]
        == "type 'storage/bdb' is a GlusterFS translator that glusterpy does not support yet"
    )
    assert messages[7] == "type 'no/such-type' is not a known translator type"
    assert (
        messages[8]
        == "type 'cluster/unify' is a GlusterFS translator that glusterpy does not support yet"
    )
    assert str(problems[0]) == f"c.vol:3: volume 's': {messages[0]}"


def test_resolve_raises_the_first_problem():
    volfile = volfile_of(BAD)
    volume = volfile.volumes[0]

    with pytest.raises(VolfileError) as info:
        resolve_options(volfile, volume, registry.get(volume.type))
    assert (info.value.line, info.value.volume) == (3, "s")
    assert "thread-count" in info.value.message


def test_an_option_given_under_two_names_is_an_error():
    volfile = volfile_of(
        "volume s type test/check-store option directory /b\n"
        " option cache-size 1MB\n option window-size 2MB\nend-volume"
    )

    [problem] = check_volfile(volfile)

    assert problem.line == 3
    assert (
        problem.message
        == "option 'window-size' repeats 'cache-size' (line 2): both name 'cache-size'"
    )


def test_a_valid_volfile_has_no_problems():
    volfile = volfile_of(
        "volume s type test/check-store option directory /b end-volume\n"
        "volume t type test/check-stack subvolumes s end-volume\n"
        "volume unused type test/check-stack end-volume\n"
    )

    assert check_volfile(volfile) == []


def test_type_aliases_resolve_to_the_canonical_type(monkeypatch):
    monkeypatch.setitem(registry.ALIASES, "test/old-store", "test/check-store")
    volfile = volfile_of("volume s type test/old-store option directory /b end-volume")

    assert check_volfile(volfile) == []
    assert registry.get("test/old-store").name == "test/check-store"


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("cluster/afr", "cluster/replicate"),
        ("cluster/dht", "cluster/distribute"),
        ("features/posix-locks", "features/locks"),
        ("performance/stat-prefetch", "performance/md-cache"),
    ],
)
def test_the_glusterfs_aliases(alias, canonical):
    assert registry.canonical(alias) == canonical


def test_graph_build_gives_translators_their_resolved_options():
    volfile = volfile_of(
        "volume s type test/check-store option directory /b option thread-count 4 end-volume\n"
        "volume top type test/check-stack subvolumes s end-volume\n"
    )

    graph = Graph.build(volfile)

    store = graph.translators["s"]
    assert isinstance(store, SampleStore)
    assert store.options["thread-count"] == 4
    assert store.options["cache-size"] == 1 << 20
    assert graph.top.name == "top"
    assert graph.top.children == [store]


def test_graph_build_refuses_a_bad_option_with_its_line():
    volfile = volfile_of("volume s type test/check-store\n option directory relative\nend-volume\n")

    with pytest.raises(VolfileError, match=r"^c.vol:2: volume 's': option 'directory' expects"):
        Graph.build(volfile)


def test_graph_runs_test_translators():
    volfile = volfile_of("volume s type test/check-store option directory /b end-volume")

    async def run():
        async with Graph.build(volfile).running() as graph:
            return graph.top.name

    assert trio.run(run) == "s"
