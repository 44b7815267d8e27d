"""The noisy-label benchmark runs end to end in its quick mode (tiny data, every method)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "noisy_labels.py"


@pytest.mark.timeout(150)
def test_quick_noisy_labels_prints_tables_plot_and_json(tmp_path):
    pytest.importorskip("cleanlab")
    pytest.importorskip("matplotlib")
    plot, out = tmp_path / "noisy.png", tmp_path / "noisy.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--plot", str(plot), "--json", str(out)],
        capture_output=True, text=True, timeout=140, check=False, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert "**sym40** — symmetric noise, 40%" in text and "**Summary**" in text
    for label in ("plain training", "GMM filter", "AUM filter", "cartography filter", "cleanlab CV + retrain"):
        assert f"| {label} |" in text, label
    assert plot.stat().st_size > 10_000
    data = json.loads(out.read_text())
    methods = {r["method"] for r in data["results"]}
    assert methods == {"plain", "gmm", "aum", "cartography", "small_loss", "cleanlab"}
    by_method = {r["method"]: r for r in data["results"]}
    plain = by_method["plain"]
    assert plain["passes"] == 3 * 1600  # 3 epochs x 1600 training samples, every sample every epoch
    for method in ("gmm", "aum", "cartography", "small_loss"):
        row = by_method[method]
        assert 0 < row["passes"] <= plain["passes"]
        assert 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
    # cleanlab: 2 folds x 1 epoch on 800 samples each, then the retraining on what it keeps
    assert by_method["cleanlab"]["detect_passes"] == 2 * 800
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in data["results"])
