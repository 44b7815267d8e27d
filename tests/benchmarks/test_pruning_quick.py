"""The pruning benchmark runs end to end in its quick mode; the random twin uses exactly the
InfoBatch run's budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "pruning.py"


@pytest.mark.timeout(120)
def test_quick_pruning_prints_table_plot_and_json(tmp_path):
    pytest.importorskip("matplotlib")
    plot, out = tmp_path / "pruning.png", tmp_path / "pruning.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--plot", str(plot), "--json", str(out)],
        capture_output=True, text=True, timeout=110, check=False, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | test acc |")
    assert any(r.startswith("| full data |") for r in rows)
    assert any(r.startswith("| InfoBatch r=0.5 |") for r in rows)
    assert any(r.startswith("| uniform random r=0.5 |") for r in rows)
    assert plot.stat().st_size > 10_000
    results = json.loads(out.read_text())["results"]
    by_method = {r["method"]: r for r in results}
    assert by_method["full"]["passes"] == 4 * 1600
    # InfoBatch prunes some well-learned samples after its warm-up epoch ...
    assert by_method["infobatch"]["passes"] < by_method["full"]["passes"]
    # ... and the uniform random twin spends exactly the same number of sample passes
    assert by_method["random"]["passes"] == by_method["infobatch"]["passes"]
