"""The README's benchmark command runs: every stage on a tiny snapshot, its figures printed (the
figures themselves are measured by hand on full-size snapshots, never asserted: timings are noise)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_benchmark_runs_every_stage_and_prints_its_ratios(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--rows", "60", "120", "--image-size",
                             "small", "--workdir", str(tmp_path), "--num-proc", "2", "--repeats", "2"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for rows in (60, 120):
        for stage in ("floor", "datasets", "build"):
            # the best of two interleaved runs, and both runs' wall times
            assert re.search(rf"^\s+{rows} rows\s+{stage}\s+[\d.]+ s\s+\d+ rows/s\s+CPU\s+[\d.]+ s\s+peak RSS\s+\d+ MB"
                             rf"\s+\(runs: [\d.]+ [\d.]+ s\)$", result.stdout, re.M), stage
        # the ratios, and the build's time split into its rows (build.json's clock) and the rest
        assert re.search(rf"^\s+{rows}\s+[\d.]+\s+[\d.]+\s+[\d.]+ s \+\s+[\d.]+ s$", result.stdout, re.M)
    for stage in ("floor", "datasets", "build"):  # the fixed cost and the cost per row, fitted on the two sizes
        assert re.search(rf"^  {stage}\s+fixed\s+-?[\d.]+ s  per 1000 rows\s+-?[\d.]+ ms$", result.stdout, re.M), stage
    assert "build peak RSS" in result.stdout
    # the stages' outputs and logs are removed, the snapshots kept for the next run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vlfeedback-120-small", "vlfeedback-60-small"]


@pytest.mark.slow
def test_a_failing_stage_shows_what_it_printed(tmp_path):
    snapshot = tmp_path / "vlfeedback-10-small"
    (snapshot / "data").mkdir(parents=True)
    (snapshot / "data" / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--rows", "10", "--image-size",
                             "small",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode != 0
    # the stage's own output
    assert "stage floor failed with exit code 1" in result.stderr and "ArrowInvalid" in result.stderr
