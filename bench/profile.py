"""`bench/run-profile`: where glusterpy spends its time on one workload, measured with py-spy.

Sets up the benchmark's glusterpy replica-2 volume, runs one workload on it while py-spy samples
the mount and the first brick, tears the volume down, and prints for each process the functions
with the most samples on top of the stack (self time) and in it (inclusive time). The raw
flame-graph inputs stay in the output directory.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.config import QUICK, Sizes, parse_perf_stack
from bench.glusterpy_volume import GlusterpyVolume
from bench.workloads import WORKLOADS, sizes_json

log = logging.getLogger("bench.profile")

TOP = Path(__file__).resolve().parent.parent
PY_SPY = Path(sys.executable).parent / "py-spy"
RATE = 250  # samples per second
STOP_TIMEOUT = 30.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run-profile", description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--quick", action="store_true", help="the quick sizes of bench/run")
    parser.add_argument("--perf", default="", metavar="STACK", help="as for bench/run")
    parser.add_argument("--top", type=int, default=25, help="functions listed per process")
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--out", default=str(TOP / "bench" / "results" / "profile"))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the workload")
    return parser.parse_args(argv)


def record(pid: int, out: Path, label: str) -> subprocess.Popen:
    """py-spy, sampling `pid` (with its threads, idle ones left out) until it is told to stop."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw"]
    command += ["--output", str(out / f"{label}.txt"), "--nonblocking"]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=open(out / f"{label}.log", "wb")
    )


def stop_recording(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
    try:
        spy.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(timeout=STOP_TIMEOUT)


def summarize(raw: Path, top: int) -> str:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive time:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """'fn (/long/path/pkg/mod.py:12)' -> 'fn (pkg/mod.py)': lines apart, one function one row."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run-profile: run as root (bricks keep trusted.* xattrs)", file=sys.stderr)
        return 2
    sizes: Sizes = QUICK if args.quick else Sizes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="glusterpy-profile-", dir=args.workdir))
    volume = GlusterpyVolume(base / "glusterpy", parse_perf_stack(args.perf))
    spies: dict[str, subprocess.Popen] = {}
    try:
        volume.setup()
        spies["mount"] = record(volume.client_pids()[0], out, "mount")
        spies["brick0"] = record(volume.brick_pids()[0], out, "brick0")
        work = volume.mountpoint / "work"  # the workload makes it
        command = [sys.executable, "-m", "bench.workloads", args.workload, str(work)]
        command += [sizes_json(sizes), "1"]
        done = subprocess.run(
            command, cwd=TOP, capture_output=True, text=True, timeout=args.timeout
        )
        print(f"{args.workload}: {done.stdout.strip() or done.stderr.strip()}")
    finally:
        for spy in spies.values():
            stop_recording(spy)
        volume.teardown()
        shutil.rmtree(base, ignore_errors=True)
    for label in spies:
        print(f"\n{label}:\n{summarize(out / f'{label}.txt', args.top)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
