"""The augmentation cost comparison against a git ref runs end to end (device path; the worker
path shares the machinery)."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.conftest import run_benchmark


@pytest.mark.timeout(300)
def test_both_trees_are_timed_for_every_compose_on_the_device_path(tmp_path):
    out = tmp_path / "cost.json"
    result = run_benchmark("worker_augment_cost.py", "--ref", "HEAD", "--path", "device", "--samples", "24",
                                             "--repeats", "1", "--rounds", "1", "--json", out, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())["us_per_batch"]
    assert set(figures) == {"HEAD", "this tree"}
    for tree in figures.values():
        assert set(tree) == {"signal Compose [40]", "image Compose [1, 28, 28]"}
        assert all(v["cpu_us"] > 0 and v["wall_us"] > 0 for v in tree.values())
