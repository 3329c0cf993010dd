"""The benchmark suite's own plumbing: targets, the table, JSON and charts, and one real quick benchmark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import BenchResult, Figure, Target, charts, table, write_json  # noqa: E402


def test_targets_judge_ratio_or_absolute_value():
    at_least_quarter = Target("ratio>=", 0.25, "issue 9")
    assert Figure("page", "renders/s", "c=1", "req/s", 300, 1000, "nginx", at_least_quarter).passed is True
    assert Figure("page", "renders/s", "c=1", "req/s", 200, 1000, "nginx", at_least_quarter).passed is False
    assert Figure("page", "renders/s", "c=1", "req/s", 200, None, "nginx", at_least_quarter).passed is None
    at_most_12 = Target("<=", 12, "issue 9")
    assert Figure("sse", "RSS per stream", "19000", "KiB", 11.9, 14.0, "nchan", at_most_12).passed is True
    assert Figure("sse", "RSS per stream", "19000", "KiB", 12.1, 9.0, "nchan", at_most_12).passed is False


@pytest.mark.slow  # matplotlib draws the charts
def test_table_json_and_charts(tmp_path):
    page = BenchResult(
        "page",
        [Figure("page", "renders/s", "c=32", "req/s", 2000, 10000, "nginx static", Target("ratio>=", 0.25, "issue 9"))],
        series={"req_s": {"ours": [(1, 900), (32, 2000)], "nginx": [(1, 5000), (32, 10000)]}},
    )
    broken = BenchResult("sse", error="`wrk` is not installed: apt-get install wrk")
    text = table([page, broken])
    row = next(line for line in text.splitlines() if line.startswith("page"))
    assert "0.20x" in row and "ratio >= 0.25" in row and row.endswith("MISS")
    assert "ERROR" in next(line for line in text.splitlines() if line.startswith("sse"))
    write_json([page, broken], tmp_path / "r.json", {"mode": "quick"})
    data = json.loads((tmp_path / "r.json").read_text())
    [figure] = data["benchmarks"]["page"]["figures"]
    assert figure["ratio"] == 0.2 and figure["passed"] is False and figure["target"]["text"] == "ratio >= 0.25"
    assert data["benchmarks"]["sse"]["error"].startswith("`wrk`")
    [png] = charts([page, broken], tmp_path, "t-")
    assert png.name == "t-page-req-s.png" and png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("wrk") and shutil.which("nginx")), reason="needs wrk (bench/setup)")
def test_quick_contact_benchmark_runs_end_to_end(tmp_path):
    done = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--only", "contact", "--no-charts", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
        # The interpreter running the suite: bench/run's default is the checkout's .venv, which a
        # second worktree or an installed copy does not have.
        env={**os.environ, "HEPGG_BENCH_PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("contact")]
    assert any("429 path" in row and "ours >= 3000" in row for row in rows), done.stdout
    assert any("allowed path" in row for row in rows)
    [result] = tmp_path.glob("*.json")
    figures = json.loads(result.read_text())["benchmarks"]["contact"]["figures"]
    assert all(f["ours"] > 0 for f in figures)
