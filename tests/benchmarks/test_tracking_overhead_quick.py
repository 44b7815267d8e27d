"""The tracking-overhead benchmark in its quick mode: one Trainer trains curated epochs (the
epoch counter advances and the decisions prune), and the timed parts and ratios are reported."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.conftest import run_benchmark


@pytest.mark.timeout(300)
def test_quick_run_trains_curated_epochs_and_reports_ratios(tmp_path):
    out = tmp_path / "tracking.json"
    result = run_benchmark("tracking_overhead.py", "--quick", "--json", str(out), timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    epochs = figures["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]  # one Trainer: the epoch counter advances
    train_samples = 800  # --quick: 1000 samples, 80% of them for training
    assert epochs[0]["kept_next"] < train_samples  # InfoBatch prunes epoch 1 (the last epoch is full)
    assert epochs[1]["steps"] < epochs[0]["steps"]  # and epoch 1 trains on the curated set
    assert figures["timed_steps"] == epochs[1]["steps"] + epochs[2]["steps"]  # every step after epoch 0
    for part in ("plain", "tracked", "augment"):
        assert figures["median_ms"][part]["cpu"] > 0
    for key in ("ratios_wall_cpu", "paired_ratios_wall_cpu", "ratios_of_minima_wall_cpu"):
        for ratio in ("tracked_over_plain", "augment_over_plain_step"):
            assert len(figures[key][ratio]) == 2 and all(r > 0 for r in figures[key][ratio]), (key, ratio)
    assert "tracked / plain step:" in result.stdout and "device augmentation / plain step:" in result.stdout
