"""bench.config and the GlusterFS side's pure parts: volfiles rendered, --perf parsed."""

import pytest

from bench import glusterfs_volume
from bench.config import PerfTranslator, brick_volfile, client_volfile, parse_perf_stack
from bench.procs import BenchError
from glusterpy import xlators
from glusterpy.volfile.check import check_volfile
from glusterpy.volfile.parse import parse_text


def volumes(text):
    return {volume.name: volume for volume in parse_text(text, "test.vol").volumes}


def test_brick_volfile_stacks_index_under_locks_and_serves_only_loopback():
    parsed = volumes(brick_volfile("/srv/b0", 24010))
    assert [v.type for v in parsed.values()] == [
        "storage/posix",
        "features/index",
        "features/locks",
        "performance/io-threads",
        "protocol/server",
    ]
    server = parsed["server"].options
    assert server["transport.socket.bind-address"] == "127.0.0.1"
    assert server["auth.addr.brick.allow"] == "127.0.0.1"
    assert server["transport.socket.listen-port"] == "24010"
    assert parsed["index"].options["index-base"] == "/srv/b0/.glusterfs/indices"


def test_client_volfile_without_perf_mounts_replicate_over_both_bricks():
    parsed = volumes(client_volfile([24010, 24011]))
    top = list(parsed.values())[-1]
    assert top.type == "cluster/replicate"
    assert top.subvolumes == ["vol-client-0", "vol-client-1"]
    assert parsed["vol-client-1"].options["remote-port"] == "24011"


def test_client_volfile_stacks_perf_translators_in_order_above_replicate():
    perf = [
        PerfTranslator("performance/write-behind", {"cache-size": "1MB"}),
        PerfTranslator("performance/io-cache"),
    ]
    parsed = volumes(client_volfile([1, 2], perf))
    assert parsed["vol-write-behind"].subvolumes == ["vol-replicate"]
    assert parsed["vol-write-behind"].options == {"cache-size": "1MB"}
    assert parsed["vol-io-cache"].subvolumes == ["vol-write-behind"]
    assert list(parsed)[-1] == "vol-io-cache"


def test_perf_stack_parses_types_and_options():
    stack = parse_perf_stack("performance/write-behind:cache-size=1MB;flush-behind=on, perf/x")
    assert stack == [
        PerfTranslator("performance/write-behind", {"cache-size": "1MB", "flush-behind": "on"}),
        PerfTranslator("perf/x", {}),
    ]
    assert parse_perf_stack("") == []


@pytest.mark.parametrize("text", ["write-behind", "performance/", "performance/wb:cache-size"])
def test_perf_stack_refuses_malformed_items_naming_them(text):
    with pytest.raises(ValueError, match="--perf item"):
        parse_perf_stack(text)


PACKAGED = """volume management
    type mgmt/glusterd
    option working-directory /var/lib/glusterd
    option transport.socket.bind-address 0.0.0.0
    option transport.socket.listen-port 24007
end-volume
"""


def test_glusterd_volfile_binds_to_loopback_once():
    text = glusterfs_volume.glusterd_volfile(PACKAGED)
    assert text.count("bind-address") == 1
    assert "    option transport.socket.bind-address 127.0.0.1" in text.splitlines()
    assert "option working-directory /var/lib/glusterd" in text


def test_glusterd_volfile_without_glusterd_volume_is_refused():
    with pytest.raises(BenchError, match="mgmt/glusterd"):
        glusterfs_volume.glusterd_volfile("volume x\n    type other/x\nend-volume\n")


def test_rendered_volfiles_pass_glusterpy_volfile_check():
    xlators.load_all()
    for text in (brick_volfile("/srv/b0", 24010), client_volfile([24010, 24011])):
        assert check_volfile(parse_text(text, "bench.vol")) == []
