"""The benchmark must not rot: run it on tiny sizes (its figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_runs_and_reports_every_workload() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "--quick"], capture_output=True, text=True,
                            timeout=240, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    for workload in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B7k", "B8", "B8+", "B9"):
        assert f"| {workload} |" in result.stdout
    assert "against a bare aiohttp handler, this run" in result.stdout
    assert "a /metrics scrape costs the daemon" in result.stdout


def test_ab_runner_runs_both_trees_alternately_and_reports_ratios() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.ab", "HEAD", ".", "--rounds", "1", "--cases", "B4",
                             "--quick"], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 1/1 old" in result.stderr and "round 1/1 new" in result.stderr
    assert "new: . = working tree on" in result.stdout
    assert "| B4 /s |" in result.stdout and "| B4 of raw |" in result.stdout
