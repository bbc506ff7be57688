"""The benchmark's workloads; each runs in a directory and answers {metric: rate}.

Rates are per second: operations (files, messages, transactions) or MB (10^6 bytes). Each
workload runs in a child process (`python -m bench.workloads NAME DIR SIZES_JSON SEED`) so that
the parent can bound it with a timeout even when a mount hangs; the child prints one JSON line.
Workloads make their own subdirectory and leave it for the parent to remove, untimed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.config import Sizes
from bench.procs import BenchError, drop_caches

log = logging.getLogger(__name__)

MB = 1e6
POSTMARK_TIMEOUT = 3600.0


def postmark_config(directory: Path, sizes: Sizes, seed: int) -> str:
    """The PostMark command file for issue 7's configuration, rooted at `directory`."""
    return "\n".join(
        [
            f"set location {directory}",
            f"set number {sizes.postmark_files}",
            f"set size {sizes.postmark_min_size} {sizes.postmark_max_size}",
            f"set transactions {sizes.postmark_transactions}",
            f"set subdirectories {sizes.postmark_subdirs}",
            f"set seed {seed}",
            "run",
            "quit",
            "",
        ]
    )


def parse_postmark(output: str) -> tuple[int, float]:
    """(seconds of transactions, transactions per second) from PostMark's report."""
    match = re.search(r"(\d+) seconds of transactions \((\d+(?:\.\d+)?) per second\)", output)
    if match is None:
        raise BenchError("PostMark's report has no 'seconds of transactions' line")
    return int(match.group(1)), float(match.group(2))


def postmark(directory: Path, sizes: Sizes, seed: int) -> dict[str, float]:
    directory.mkdir()
    command_file = directory.with_name(directory.name + ".pm")
    command_file.write_text(postmark_config(directory, sizes, seed))
    done = subprocess.run(
        ["postmark", str(command_file)], capture_output=True, text=True, timeout=POSTMARK_TIMEOUT
    )
    command_file.unlink()
    if done.returncode != 0:
        raise BenchError(f"postmark exited {done.returncode}: {done.stderr.strip()[-200:]}")
    seconds, rate = parse_postmark(done.stdout)
    # PostMark counts whole seconds; under 1 s it reports the bare count, which is no rate.
    if seconds == 0:
        rate = float("nan")
    return {"postmark": rate}


def message_body(rng: random.Random, sizes: Sizes) -> bytes:
    size = rng.randint(sizes.maildir_min_size, sizes.maildir_max_size)
    header = b"From: sender@example.org\nSubject: benchmark\n\n"
    return header + b"x" * max(0, size - len(header))


def _deliver(maildir: Path, numbers: range, sizes: Sizes, seed: int) -> None:
    rng = random.Random(seed)
    for n in numbers:
        name = f"{n}.{seed}.bench"
        tmp = maildir / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(message_body(rng, sizes))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, maildir / "new" / name)


def maildir(directory: Path, sizes: Sizes, seed: int) -> dict[str, float]:
    """Parallel deliveries (tmp/ -> fsync -> rename into new/), then one reader reads all."""
    for sub in ("tmp", "new", "cur"):
        (directory / sub).mkdir(parents=True)
    writers = sizes.maildir_writers
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            _deliver(directory, range(k, sizes.maildir_messages, writers), sizes, seed + k)
        except BaseException as e:
            errors.append(e)

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deliver_seconds = time.monotonic() - started
    if errors:
        raise BenchError(f"maildir delivery failed: {errors[0]!r}")

    drop_caches()
    started = time.monotonic()
    names = os.listdir(directory / "new")
    for name in names:
        (directory / "new" / name).read_bytes()
    read_seconds = time.monotonic() - started
    if len(names) != sizes.maildir_messages:
        raise BenchError(f"maildir: {len(names)} messages in new/, {sizes.maildir_messages} sent")
    return {
        "maildir-deliver": sizes.maildir_messages / deliver_seconds,
        "maildir-read": sizes.maildir_messages / read_seconds,
    }


def sequential(directory: Path, sizes: Sizes, seed: int) -> dict[str, float]:
    """Write `seq_bytes` in `seq_block` blocks + fsync; read back with a cold page cache."""
    directory.mkdir()
    path = directory / "big"
    block = random.Random(seed).randbytes(sizes.seq_block)
    blocks = sizes.seq_bytes // sizes.seq_block
    started = time.monotonic()
    with open(path, "wb", buffering=0) as f:
        for _ in range(blocks):
            f.write(block)
        os.fsync(f.fileno())
    write_seconds = time.monotonic() - started

    drop_caches()
    started = time.monotonic()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(sizes.seq_block):
            total += len(chunk)
    read_seconds = time.monotonic() - started
    if total != blocks * sizes.seq_block:
        raise BenchError(f"sequential: read {total} bytes back, wrote {blocks * sizes.seq_block}")
    return {"seq-write": total / MB / write_seconds, "seq-read": total / MB / read_seconds}


def _timed(step: Callable[[], None]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def metadata(directory: Path, sizes: Sizes, seed: int) -> dict[str, float]:
    """Create, stat, list and unlink `metadata_files` empty files in one directory."""
    directory.mkdir()
    paths = [str(directory / f"f{i:06d}") for i in range(sizes.metadata_files)]
    listed: list[str] = []

    def create() -> None:
        for path in paths:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    def stat() -> None:
        for path in paths:
            os.stat(path)

    def unlink() -> None:
        for path in paths:
            os.unlink(path)

    seconds = {
        "meta-create": _timed(create),
        "meta-stat": _timed(stat),
        "meta-list": _timed(lambda: listed.extend(os.listdir(directory))),
        "meta-unlink": _timed(unlink),
    }
    if len(listed) != len(paths):
        raise BenchError(f"metadata: listed {len(listed)} files, created {len(paths)}")
    rates = {metric: len(paths) / s for metric, s in seconds.items()}
    rates["metadata"] = 4 * len(paths) / sum(seconds.values())
    return rates


WORKLOADS: dict[str, Callable[[Path, Sizes, int], dict[str, float]]] = {
    "postmark": postmark,
    "maildir": maildir,
    "sequential": sequential,
    "metadata": metadata,
}


def main(argv: list[str]) -> int:
    name, directory, sizes_json, seed = argv
    sizes = Sizes(**json.loads(sizes_json))
    try:
        rates = WORKLOADS[name](Path(directory), sizes, int(seed))
    except (BenchError, OSError, subprocess.TimeoutExpired) as e:
        print(json.dumps({"error": f"{name}: {e}"}))
        return 1
    print(json.dumps(rates))
    return 0


def sizes_json(sizes: Sizes) -> str:
    return json.dumps(dataclasses.asdict(sizes))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
