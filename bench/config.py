"""What one benchmark run does: workload sizes, rounds, and the glusterpy volfiles it renders.

`Sizes` holds the full configuration of issue 7 (PostMark 2,000 files / 5,000 transactions,
1 GiB sequential, 10,000 metadata files) and `QUICK` a small one for a try in a few minutes.
The volfile renderers are pure: the brick stack is posix -> index -> locks -> io-threads ->
protocol/server bound to 127.0.0.1, and the client is two protocol/clients under
cluster/replicate, with an optional list of performance translators stacked above it in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; every field is positive."""

    postmark_files: int = 2000
    postmark_transactions: int = 5000
    postmark_subdirs: int = 10
    postmark_min_size: int = 1000
    postmark_max_size: int = 20000
    maildir_writers: int = 4
    maildir_messages: int = 2000
    maildir_min_size: int = 2 * 1024
    maildir_max_size: int = 50 * 1024
    seq_bytes: int = 1 << 30
    seq_block: int = 1 << 20
    metadata_files: int = 10000


QUICK = Sizes(
    postmark_files=300,
    postmark_transactions=600,
    maildir_messages=300,
    seq_bytes=64 << 20,
    metadata_files=1000,
)


@dataclass(frozen=True)
class PerfTranslator:
    """One performance translator for the client stack: its volfile type and options."""

    type_name: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def volume_name(self) -> str:
        return "vol-" + self.type_name.rsplit("/", 1)[-1]


def parse_perf_stack(text: str) -> list[PerfTranslator]:
    """'performance/write-behind:cache-size=1MB,performance/io-cache' -> translators, in order.

    Raises ValueError with the offending item for anything not 'kind/name[:key=value;...]'.
    """
    stack: list[PerfTranslator] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        type_name, _, option_text = item.partition(":")
        if type_name.count("/") != 1 or not all(type_name.split("/")):
            raise ValueError(f"--perf item '{item}': want TYPE like performance/write-behind")
        options = {}
        for pair in filter(None, option_text.split(";")):
            key, sep, value = pair.partition("=")
            if not sep or not key or not value:
                raise ValueError(f"--perf item '{item}': option '{pair}' is not key=value")
            options[key] = value
        stack.append(PerfTranslator(type_name, options))
    return stack


def volume_block(
    name: str, type_name: str, options: dict[str, object], subvolumes: list[str] | None = None
) -> str:
    """One `volume ... end-volume` block of a volfile."""
    lines = [f"volume {name}", f"    type {type_name}"]
    lines += [f"    option {key} {value}" for key, value in options.items()]
    if subvolumes:
        lines.append(f"    subvolumes {' '.join(subvolumes)}")
    lines.append("end-volume")
    return "\n".join(lines) + "\n"


def brick_volfile(directory: str, port: int, thread_count: int = 4) -> str:
    """posix -> index -> locks -> io-threads -> server, exporting `brick` to 127.0.0.1 only."""
    server = {
        "transport-type": "tcp",
        "transport.socket.bind-address": LOOPBACK,
        "transport.socket.listen-port": port,
        "transport.socket.nodelay": "on",
        "auth.addr.brick.allow": LOOPBACK,
    }
    blocks = [
        volume_block("posix", "storage/posix", {"directory": directory}),
        volume_block(
            "index", "features/index", {"index-base": f"{directory}/.glusterfs/indices"}, ["posix"]
        ),
        volume_block("locks", "features/locks", {}, ["index"]),
        volume_block("brick", "performance/io-threads", {"thread-count": thread_count}, ["locks"]),
        volume_block("server", "protocol/server", server, ["brick"]),
    ]
    return "\n".join(blocks)


def client_volfile(ports: list[int], perf: list[PerfTranslator] = ()) -> str:
    """Replicate over one protocol/client per brick port, then `perf` stacked in order.

    The last volume is the one mounted: the top performance translator, or replicate.
    """
    blocks = []
    names = []
    for i, port in enumerate(ports):
        name = f"vol-client-{i}"
        options = {
            "transport-type": "tcp",
            "remote-host": LOOPBACK,
            "remote-port": port,
            "remote-subvolume": "brick",
            "transport.socket.nodelay": "on",
        }
        blocks.append(volume_block(name, "protocol/client", options))
        names.append(name)
    below = "vol-replicate"
    blocks.append(volume_block(below, "cluster/replicate", {}, names))
    for translator in perf:
        blocks.append(
            volume_block(translator.volume_name, translator.type_name, translator.options, [below])
        )
        below = translator.volume_name
    return "\n".join(blocks)
