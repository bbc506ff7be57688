"""Results of a benchmark run: medians, ratios, the text table, the JSON file and the chart.

Samples are kept per system and metric as one value per round (NaN for a round that gave no
rate). Medians ignore NaN; a metric with no valid sample has median None, and every ratio that
needs it is None too. Nothing here measures anything: it is pure and unit-tested.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path

log = logging.getLogger(__name__)

GLUSTERPY, GLUSTERFS, LOCAL = "glusterpy", "glusterfs", "local"
SYSTEMS = (GLUSTERPY, GLUSTERFS, LOCAL)

# metric -> (unit, issue 7's target for glusterpy / GlusterFS)
METRICS: dict[str, tuple[str, float | None]] = {
    "postmark": ("tx/s", 3.0),
    "maildir-deliver": ("msg/s", 3.0),
    "maildir-read": ("msg/s", 3.0),
    "seq-write": ("MB/s", 1.0),
    "seq-read": ("MB/s", 1.0),
    "metadata": ("ops/s", 2.0),
    "meta-create": ("files/s", 2.0),
    "meta-stat": ("files/s", 2.0),
    "meta-list": ("files/s", 2.0),
    "meta-unlink": ("files/s", 2.0),
}
RSS_TARGET_MB = 80.0


def median(values: list[float]) -> float | None:
    valid = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(valid) if valid else None


def ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def summarize(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict]:
    """Per metric: medians of each system, the three ratios, and the target check."""
    summary = {}
    for metric, (unit, target) in METRICS.items():
        medians = {system: median(samples.get(system, {}).get(metric, [])) for system in SYSTEMS}
        if all(value is None for value in medians.values()):
            continue
        vs_glusterfs = ratio(medians[GLUSTERPY], medians[GLUSTERFS])
        summary[metric] = {
            "unit": unit,
            "median": medians,
            "glusterpy/glusterfs": vs_glusterfs,
            "glusterpy/local": ratio(medians[GLUSTERPY], medians[LOCAL]),
            "glusterfs/local": ratio(medians[GLUSTERFS], medians[LOCAL]),
            "target": target,
            "target_met": None if vs_glusterfs is None else vs_glusterfs >= target,
        }
    return summary


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(summary: dict[str, dict]) -> str:
    """A Markdown table: medians, ratios and whether issue 7's target holds."""
    header = (
        "| metric | unit | glusterpy | GlusterFS | local disk | glusterpy/GlusterFS "
        "| glusterpy/local | GlusterFS/local | target | met |"
    )
    lines = [header, "|" + "---|" * 10]
    for metric, row in summary.items():
        met = {None: "-", True: "yes", False: "no"}[row["target_met"]]
        cells = [
            metric,
            row["unit"],
            _number(row["median"][GLUSTERPY]),
            _number(row["median"][GLUSTERFS]),
            _number(row["median"][LOCAL]),
            _ratio_text(row["glusterpy/glusterfs"]),
            _ratio_text(row["glusterpy/local"]),
            _ratio_text(row["glusterfs/local"]),
            f">= {row['target']:g}x" if row["target"] is not None else "-",
            met,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rss_table(rss: dict[str, dict[str, list[int | None]]]) -> str:
    """Peak RSS (VmHWM) per brick and client process, in MB, with the brick target."""
    lines = ["| system | process | peak RSS (MB) | brick target |", "|---|---|---|---|"]
    for system, kinds in rss.items():
        for kind, values in kinds.items():
            for i, kib in enumerate(values):
                mb = None if kib is None else kib / 1024
                target = f"< {RSS_TARGET_MB:g} MB" if kind == "brick" else "-"
                lines.append(f"| {system} | {kind} {i} | {_number(mb)} | {target} |")
    return "\n".join(lines)


def write_json(path: Path, run: dict, samples: dict, summary: dict, rss: dict) -> None:
    """The whole result: run description, every sample, the summary and peak RSS."""
    document = {"run": run, "samples": samples, "summary": summary, "peak_rss_kib": rss}
    path.write_text(json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=str))


def json_safe(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list]]:
    """NaN (a round without a rate) becomes null, which JSON can carry."""
    return {
        system: {
            metric: [None if v is None or math.isnan(v) else v for v in values]
            for metric, values in metrics.items()
        }
        for system, metrics in samples.items()
    }


def _bar(value: float | None) -> float:
    # NaN draws no bar; a zero would break the log scale.
    return float("nan") if value is None or value <= 0 else value


def chart(path: Path, summary: dict[str, dict], title: str) -> bool:
    """A PNG of the ratios; False (and a warning) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart (run scripts/setup-env)")
        return False
    metrics = list(summary)
    series = [
        ("glusterpy / GlusterFS", "glusterpy/glusterfs"),
        ("glusterpy / local disk", "glusterpy/local"),
        ("GlusterFS / local disk", "glusterfs/local"),
    ]
    figure, axis = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(series)
    for k, (label, key) in enumerate(series):
        values = [_bar(summary[m][key]) for m in metrics]
        positions = [i + (k - 1) * width for i in range(len(metrics))]
        axis.bar(positions, values, width, label=label)
    for i, metric in enumerate(metrics):
        target = summary[metric]["target"]
        if target is not None:
            axis.plot([i - 0.45, i + 0.45], [target, target], color="black", linewidth=1)
    axis.set_yscale("log")
    axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    axis.set_ylabel("ratio of medians (log scale); black line: issue 7 target")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
