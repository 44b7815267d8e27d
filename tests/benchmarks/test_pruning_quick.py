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
    assert rows[0].startswith("| lr schedule | method | test acc |")
    assert any(r.startswith("| constant | full data |") for r in rows)
    assert any(r.startswith("| constant | InfoBatch r=0.5 |") for r in rows)
    assert any(r.startswith("| constant | uniform random r=0.5 |") for r in rows)
    assert plot.stat().st_size > 10_000
    results = json.loads(out.read_text())["results"]
    by_method = {r["method"]: r for r in results}
    assert by_method["full"]["passes"] == 4 * 1600
    # InfoBatch prunes some well-learned samples after its warm-up epoch ...
    assert by_method["infobatch"]["passes"] < by_method["full"]["passes"]
    # ... and the uniform random twin spends exactly the same number of sample passes
    assert by_method["random"]["passes"] == by_method["infobatch"]["passes"]


@pytest.mark.timeout(200)
def test_quick_pruning_runs_every_variant_with_the_same_final_lr_decay(tmp_path):
    """``--final-lr-decay`` repeats full, InfoBatch (both reductions) and random with the decay;
    each delta is taken against the full-data run of the same schedule."""
    out = tmp_path / "pruning.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--plot", "", "--json", str(out), "--final-lr-decay", "1", "0.5",
         "--reductions", "normalized", "mean"],
        capture_output=True, text=True, timeout=190, check=False, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(out.read_text())
    cells = {(r["schedule"], r["method"]) for r in saved["results"]}
    methods = {"full", "infobatch", "random", "infobatch-mean", "random-mean"}
    assert cells == {(s, m) for s in ("constant", "decay") for m in methods}
    for row in saved["rows"]:
        full = next(r for r in saved["rows"] if r["schedule"] == row["schedule"] and r["method"] == "full")
        assert row["test_acc"] - full["test_acc"] == pytest.approx(row["delta_acc"], abs=1e-9) or row["seeds"] > 1
    # the same table again from the JSON, without training
    again = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(out), "--plot", ""],
                           capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| decay | InfoBatch r=0.5 (mean) |" in again.stdout
