"""Running the plan: every workload, every round, every system, each in a bounded child.

Order: for each workload and round, the two volumes alternate which goes first (A B, then B A)
and the local disk comes last, so that neither volume always meets a warmer or colder machine.
A run that fails or times out adds NaN to its samples and is logged; the others go on.
After each run its directory is removed (untimed, bounded) so the next starts from empty.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import procs, report, workloads
from bench.config import PerfTranslator, Sizes

log = logging.getLogger(__name__)

WORKLOAD_NAMES = tuple(workloads.WORKLOADS)
REMOVE_TIMEOUT = 600.0
KILL_TIMEOUT = 30.0


@dataclass
class Plan:
    """What to run; `systems` is a subset of report.SYSTEMS, `rounds` >= 1."""

    sizes: Sizes
    rounds: int
    workloads: list[str]
    systems: list[str]
    timeout: float
    perf: list[PerfTranslator] = field(default_factory=list)


@dataclass
class Results:
    """samples[system][metric] = one rate per round; rss[system][kind] = VmHWM KiB per process."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    rss: dict[str, dict[str, list[int | None]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def system_order(systems: list[str], round_index: int) -> list[str]:
    """The volumes in the plan's order on even rounds, reversed on odd ones; local disk last."""
    volumes = [s for s in systems if s != report.LOCAL]
    if round_index % 2:
        volumes.reverse()
    return volumes + [s for s in systems if s == report.LOCAL]


def run_all(plan: Plan, places: dict[str, Path]) -> Results:
    results = Results()
    for workload in plan.workloads:
        for round_index in range(plan.rounds):
            for system in system_order(plan.systems, round_index):
                rates = run_one(plan, workload, places[system], round_index, results)
                _record(results, system, workload, round_index, rates)
    return results


def _record(results: Results, system: str, workload: str, round_index: int, rates: dict) -> None:
    if not rates:
        rates = {metric: math.nan for metric in METRICS_OF[workload]}
    for metric, value in rates.items():
        samples = results.samples.setdefault(system, {}).setdefault(metric, [])
        samples.append(value)
        unit = report.METRICS.get(metric, ("",))[0]
        log.info(
            "round %d %-10s %-9s %-16s %10.1f %s",
            round_index + 1,
            workload,
            system,
            metric,
            value,
            unit,
        )


METRICS_OF = {
    "postmark": ("postmark",),
    "maildir": ("maildir-deliver", "maildir-read"),
    "sequential": ("seq-write", "seq-read"),
    "metadata": ("metadata", "meta-create", "meta-stat", "meta-list", "meta-unlink"),
}


def run_one(
    plan: Plan, workload: str, place: Path, round_index: int, results: Results
) -> dict[str, float]:
    """One workload in a child process under `place`; {} when it failed (and why is logged)."""
    directory = place / f"{workload}-r{round_index + 1}"
    command = [sys.executable, "-m", "bench.workloads", workload, str(directory)]
    command += [workloads.sizes_json(plan.sizes), str(1000 + round_index)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        out, err = proc.communicate(timeout=plan.timeout)
    except subprocess.TimeoutExpired:
        procs.stop_popen(proc, KILL_TIMEOUT)
        out, err = "", f"timed out after {plan.timeout:g} s"
    finally:
        _remove(directory)
    try:
        answer = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except json.JSONDecodeError:
        answer = {}
    if proc.returncode == 0 and "error" not in answer and answer:
        return answer
    why = answer.get("error") or (err.strip().splitlines() or ["no output"])[-1]
    failure = f"{workload} round {round_index + 1} on {place}: {why}"
    log.error("%s", failure)
    results.failures.append(failure)
    return {}


def _remove(directory: Path) -> None:
    try:
        done = procs.run(["rm", "-rf", str(directory)], REMOVE_TIMEOUT)
        if done.returncode != 0:
            log.warning("could not remove %s: %s", directory, done.stderr.strip())
    except procs.BenchError as e:
        log.warning("%s", e)


def peak_rss(volumes: dict) -> dict[str, dict[str, list[int | None]]]:
    """VmHWM of each brick and FUSE client process, read while they still run."""
    return {
        name: {
            "brick": [procs.peak_rss_kib(pid) for pid in volume.brick_pids()],
            "client": [procs.peak_rss_kib(pid) for pid in volume.client_pids()],
        }
        for name, volume in volumes.items()
    }


def describe(plan: Plan, args: argparse.Namespace) -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "rounds": plan.rounds,
        "quick": args.quick,
        "binding": args.binding,
        "perf_stack": [asdict(t) for t in plan.perf],
        "sizes": asdict(plan.sizes),
        "glusterfs_version": _glusterfs_version(),
    }


def _glusterfs_version() -> str | None:
    try:
        done = procs.run(["gluster", "--version"], 30)
    except (procs.BenchError, OSError):
        return None
    return done.stdout.splitlines()[0] if done.stdout else None


def write_outputs(out: Path, plan: Plan, results: Results, args: argparse.Namespace) -> int:
    """results.md, results.json and ratios.png in `out`; 1 when some run failed, else 0."""
    out.mkdir(parents=True, exist_ok=True)
    run = describe(plan, args)
    run["failures"] = results.failures
    summary = report.summarize(results.samples)
    text = report.table(summary) + "\n\n" + report.rss_table(results.rss) + "\n"
    (out / "results.md").write_text(f"Measured {run['date']}:\n\n{text}")
    report.write_json(
        out / "results.json", run, report.json_safe(results.samples), summary, results.rss
    )
    title = f"glusterpy vs GlusterFS, replica 2 on one disk, {run['date'][:10]}"
    report.chart(out / "ratios.png", summary, title)
    print(text)
    print(f"written: {out}/results.md, results.json, ratios.png")
    for failure in results.failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if results.failures else 0
