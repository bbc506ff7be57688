"""bench.report: medians that skip failed rounds, ratios, the Markdown table and the JSON file."""

import json
import math

from bench import report


def samples(glusterpy, glusterfs, local, metric="postmark"):
    return {
        "glusterpy": {metric: glusterpy},
        "glusterfs": {metric: glusterfs},
        "local": {metric: local},
    }


def test_median_ignores_failed_rounds_and_is_none_without_any():
    assert report.median([3.0, math.nan, 1.0, 2.0]) == 2.0
    assert report.median([math.nan, None]) is None
    assert report.median([]) is None


def test_ratio_is_none_when_either_side_is_missing_or_zero():
    assert report.ratio(300.0, 100.0) == 3.0
    assert report.ratio(None, 100.0) is None
    assert report.ratio(300.0, None) is None
    assert report.ratio(300.0, 0.0) is None


def test_summary_holds_medians_ratios_and_target_check():
    summary = report.summarize(samples([400, 380, 420], [100, 120, 110], [5000, 5200, 4800]))
    row = summary["postmark"]
    assert row["median"] == {"glusterpy": 400, "glusterfs": 110, "local": 5000}
    assert row["glusterpy/glusterfs"] == 400 / 110
    assert row["glusterpy/local"] == 400 / 5000
    assert row["glusterfs/local"] == 110 / 5000
    assert row["target"] == 3.0
    assert row["target_met"] is True


def test_summary_marks_a_missed_target_and_skips_metrics_nobody_measured():
    summary = report.summarize(samples([100], [200], [math.nan], metric="seq-write"))
    assert list(summary) == ["seq-write"]
    assert summary["seq-write"]["target_met"] is False
    assert summary["seq-write"]["glusterpy/local"] is None


def test_summary_without_glusterfs_has_no_verdict():
    summary = report.summarize({"glusterpy": {"metadata": [10.0]}, "local": {"metadata": [20.0]}})
    assert summary["metadata"]["glusterpy/glusterfs"] is None
    assert summary["metadata"]["target_met"] is None
    assert summary["metadata"]["glusterpy/local"] == 0.5


def test_table_has_one_row_per_metric_with_ratios_and_verdict():
    summary = report.summarize(samples([400], [100], [5000]))
    lines = report.table(summary).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("| metric | unit | glusterpy | GlusterFS | local disk |")
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells == [
        "postmark",
        "tx/s",
        "400.0",
        "100.0",
        "5,000.0",
        "4.00x",
        "0.08x",
        "0.02x",
        ">= 3x",
        "yes",
    ]


def test_rss_table_lists_each_process_in_megabytes():
    text = report.rss_table({"glusterpy": {"brick": [40960, None], "client": [20480]}})
    assert "| glusterpy | brick 0 | 40.0 | < 80 MB |" in text
    assert "| glusterpy | brick 1 | - | < 80 MB |" in text
    assert "| glusterpy | client 0 | 20.0 | - |" in text


def test_json_file_carries_samples_with_failed_rounds_as_null(tmp_path):
    raw = samples([1.0, math.nan], [2.0, 2.5], [9.0, 9.5])
    summary = report.summarize(raw)
    path = tmp_path / "results.json"
    report.write_json(path, {"rounds": 2}, report.json_safe(raw), summary, {"glusterpy": {}})
    document = json.loads(path.read_text())
    assert document["samples"]["glusterpy"]["postmark"] == [1.0, None]
    assert document["summary"]["postmark"]["median"]["glusterfs"] == 2.25
    assert document["run"] == {"rounds": 2}
    assert document["peak_rss_kib"] == {"glusterpy": {}}


def test_chart_is_a_png(tmp_path):
    summary = report.summarize(samples([400], [100], [5000]))
    path = tmp_path / "ratios.png"
    assert report.chart(path, summary, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
