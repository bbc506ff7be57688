"""bench.workloads and bench.runner: PostMark's command file and report, round order, metadata."""

import math

import pytest

from bench import report, runner, workloads
from bench.config import QUICK, Sizes
from bench.procs import BenchError

POSTMARK_REPORT = """Time:
\t42 seconds total
\t40 seconds of transactions (125 per second)

Files:
\t4473 created (106 per second)
"""


def test_postmark_config_is_issue_7s_configuration(tmp_path):
    text = workloads.postmark_config(tmp_path / "pm", Sizes(), 7)
    lines = text.splitlines()
    assert lines[0] == f"set location {tmp_path / 'pm'}"
    assert "set number 2000" in lines
    assert "set size 1000 20000" in lines
    assert "set transactions 5000" in lines
    assert "set subdirectories 10" in lines
    assert "set seed 7" in lines
    assert lines[-2:] == ["run", "quit"]


def test_postmark_report_gives_transaction_seconds_and_rate():
    assert workloads.parse_postmark(POSTMARK_REPORT) == (40, 125.0)


def test_postmark_report_without_transaction_line_is_an_error():
    with pytest.raises(BenchError, match="seconds of transactions"):
        workloads.parse_postmark("PostMark v1.51\nError: cannot create\n")


def test_volumes_alternate_which_goes_first_and_local_disk_is_last():
    systems = ["glusterpy", "glusterfs", "local"]
    assert runner.system_order(systems, 0) == ["glusterpy", "glusterfs", "local"]
    assert runner.system_order(systems, 1) == ["glusterfs", "glusterpy", "local"]
    assert runner.system_order(systems, 2) == ["glusterpy", "glusterfs", "local"]
    assert runner.system_order(["local"], 1) == ["local"]


def test_every_workload_metric_has_a_unit_and_target():
    metrics = [m for names in runner.METRICS_OF.values() for m in names]
    assert set(runner.METRICS_OF) == set(workloads.WORKLOADS)
    assert sorted(metrics) == sorted(report.METRICS)


def test_quick_sizes_are_smaller_than_full_ones():
    full = Sizes()
    assert QUICK.postmark_transactions < full.postmark_transactions
    assert QUICK.seq_bytes < full.seq_bytes
    assert QUICK.metadata_files < full.metadata_files
    assert QUICK.seq_bytes % QUICK.seq_block == 0


def test_metadata_workload_creates_lists_and_removes_every_file(tmp_path):
    directory = tmp_path / "meta"
    rates = workloads.metadata(directory, Sizes(metadata_files=25), 1)
    assert set(rates) == set(runner.METRICS_OF["metadata"])
    assert all(rate > 0 and not math.isnan(rate) for rate in rates.values())
    assert list(directory.iterdir()) == []


def test_a_failed_run_records_nan_for_each_of_its_metrics():
    results = runner.Results()
    runner._record(results, "glusterpy", "sequential", 0, {})
    assert set(results.samples["glusterpy"]) == {"seq-write", "seq-read"}
    assert all(math.isnan(v[0]) for v in results.samples["glusterpy"].values())


def test_profile_summary_counts_self_and_inclusive_samples(tmp_path):
    from bench.profile import summarize

    raw = tmp_path / "mount.txt"
    raw.write_text(
        "main (/x/glusterpy/cli/main.py:10);send (/x/glusterpy/rpc/connection.py:80) 3\n"
        "main (/x/glusterpy/cli/main.py:10);read (/x/glusterpy/fuse/bridge.py:429) 1\n"
        "not a sample line\n"
    )
    text = summarize(raw, top=5)
    assert "4 samples" in text
    own, inclusive = text.split("inclusive time:")
    assert "75.0%  send (rpc/connection.py)" in own
    assert "25.0%  read (fuse/bridge.py)" in own
    assert "100.0%  main (cli/main.py)" in inclusive
