"""`bench/run`: glusterpy and GlusterFS 10.3 side by side, replica 2 on one disk, plus local disk.

Steps: check root and the tools (installing glusterfs-server and postmark from Debian when
missing), set both volumes up under a fresh work directory, run each workload for every round
on every system (the two volumes alternate which goes first), read the bricks' peak RSS, write
the table, JSON and chart, and tear everything down, also on an error, SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import procs, report, runner
from bench.config import QUICK, Sizes, parse_perf_stack
from bench.glusterfs_volume import GlusterfsVolume
from bench.glusterpy_volume import GlusterpyVolume

log = logging.getLogger("bench")

TOP = Path(__file__).resolve().parent.parent
APT_TIMEOUT = 900.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round (a few min)")
    parser.add_argument("--rounds", type=int, help="rounds per workload (default 3; quick 1)")
    parser.add_argument(
        "--workloads",
        default=",".join(runner.WORKLOAD_NAMES),
        help="comma-separated subset of: %(default)s",
    )
    parser.add_argument(
        "--systems", default=",".join(report.SYSTEMS), help="comma-separated subset of: %(default)s"
    )
    parser.add_argument(
        "--perf",
        default="",
        metavar="STACK",
        help="performance translators above replicate in the glusterpy client, bottom first: "
        "'performance/write-behind:opt=val;opt=val,performance/io-cache'",
    )
    parser.add_argument("--binding", default="kernel", choices=("kernel", "pyfuse3"))
    parser.add_argument("--workdir", default="/var/tmp", help="where bricks and mounts go")
    parser.add_argument("--out", default=str(TOP / "bench" / "results"), help="output directory")
    parser.add_argument("--timeout", type=float, help="seconds per workload run (1800; quick 300)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> runner.Plan:
    """The validated plan; ValueError names the bad option."""
    workloads = [w for w in args.workloads.split(",") if w]
    systems = [s for s in args.systems.split(",") if s]
    for value, allowed, option in (
        (workloads, runner.WORKLOAD_NAMES, "--workloads"),
        (systems, report.SYSTEMS, "--systems"),
    ):
        unknown = [v for v in value if v not in allowed]
        if unknown or not value:
            raise ValueError(f"{option}: unknown or empty {unknown}; choose from {allowed}")
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    return runner.Plan(
        sizes=QUICK if args.quick else Sizes(),
        rounds=rounds,
        workloads=workloads,
        systems=systems,
        timeout=args.timeout or (300.0 if args.quick else 1800.0),
        perf=parse_perf_stack(args.perf),
    )


def ensure_tools() -> None:
    """Install glusterfs-server and postmark from Debian when their programs are missing."""
    wanted = {"glusterd": "glusterfs-server", "gluster": "glusterfs-server"}
    wanted |= {"mount.glusterfs": "glusterfs-client", "postmark": "postmark"}
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if not missing:
        return
    log.info("installing Debian packages: %s", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = procs.run(command, APT_TIMEOUT, env=env)
        if done.returncode != 0:
            raise procs.BenchError(f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}")


def _terminate(signum: int, _frame) -> None:
    # SIGTERM takes the same road as Ctrl-C, so the teardown in `finally` runs.
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, plan: runner.Plan) -> int:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="glusterpy-bench-", dir=args.workdir))
    volumes = {}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        if report.GLUSTERPY in plan.systems:
            volumes[report.GLUSTERPY] = GlusterpyVolume(work / "glusterpy", plan.perf, args.binding)
        if report.GLUSTERFS in plan.systems:
            volumes[report.GLUSTERFS] = GlusterfsVolume(work / "glusterfs", f"bench{os.getpid()}")
        for volume in volumes.values():
            cleanup.callback(volume.teardown)
            volume.setup()
        places = {name: volume.mountpoint for name, volume in volumes.items()}
        if report.LOCAL in plan.systems:
            places[report.LOCAL] = work / "local"
            places[report.LOCAL].mkdir()
        results = runner.run_all(plan, places)
        results.rss = runner.peak_rss(volumes)
    return runner.write_outputs(Path(args.out), plan, results, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s bench: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        plan = build_plan(args)
    except ValueError as e:
        print(f"bench/run: {e}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench/run: must run as root (mounts, glusterd, drop_caches)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        status = run(args, plan)
    except procs.BenchError as e:
        print(f"bench/run: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/run: interrupted; everything it started is torn down", file=sys.stderr)
        return 130
    log.info("done in %.0f s", time.monotonic() - started)
    return status


if __name__ == "__main__":
    sys.exit(main())
