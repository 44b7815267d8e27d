"""The re-curation benchmark runs end to end in its quick mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "recuration_cost.py"


@pytest.mark.timeout(120)
def test_quick_benchmark_prints_a_table():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| N | plan (s)") and len(rows) == 3  # header + two sizes
    assert rows[1].startswith("| 1,000 |") and rows[2].startswith("| 10,000 |")


@pytest.mark.timeout(300)
def test_quick_comparison_against_a_git_ref_times_both_trees(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "cost.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--ref", "HEAD", "--rounds", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=280, check=False, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    best = json.loads(out.read_text())["against_ref"]["min_plan_s"]
    assert sorted(best) == ["10000|HEAD", "10000|this tree", "1000|HEAD", "1000|this tree"]
    assert all(v["wall"] > 0 and v["cpu"] >= 0 for v in best.values())
    assert "plan: HEAD against this tree" in result.stdout
