"""The GPU check script: without CUDA it says so and exits 0; ``--dry-run`` runs its plumbing
on CPU; its parsers read the sub-benchmarks' tables."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch

from tests.benchmarks.conftest import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return run_benchmark(SCRIPT, *args, timeout=timeout)


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would really run")
@pytest.mark.timeout(60)
def test_quick_without_gpu_says_so_and_exits_cleanly():
    result = _run("--quick", timeout=50)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no CUDA GPU" in result.stdout
    assert "| check |" not in result.stdout  # nothing was measured


@pytest.mark.timeout(120)
def test_dry_run_on_cpu_runs_recuration_and_end_to_end():
    result = _run("--dry-run", "--parts", "recuration", "e2e", timeout=110)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| check | status | result |"
    names = [r.split(" | ")[0] for r in rows[1:]]
    assert names[:2] == ["| re-curation, N = 1,000", "| re-curation, N = 10,000"]
    assert any(n.startswith("| end to end,") for n in names)
    assert all(" | ok | " in r for r in rows[1:])
    assert "0 failed" in result.stdout


def test_parsers_read_the_sub_benchmark_tables():
    gpu_check = _module()
    recuration = (
        "device: cuda\n\n| N | plan (s) | plan per 1M samples (s) | plan CPU time (s) | record (ms) | ledger memory (MiB) |\n"
        "|---:|---:|---:|---:|---:|---:|\n| 100,000 | 0.012 | 0.120 | 0.010 | 0.210 | 9 |\n"
        "| 10,000,000 | 0.350 | 0.035 | 0.300 | 0.250 | 925 |\n"
    )
    rows = gpu_check.parse_recuration(recuration)
    assert [r[0] for r in rows] == ["re-curation, N = 100,000", "re-curation, N = 10,000,000"]
    assert "plan 0.350 s; record 0.250 ms" in rows[1][2] and "925 MiB" in rows[1][2]
    tracking = (
        "device: H100\n\n| part (per batch) | median wall ms | median CPU ms |\n|---|---:|---:|\n"
        "| plain step | 1.100 | 1.000 |\n| tracked step (curated_loss) | 1.105 | 1.002 |\n"
        "| device-path augmentation | 0.080 | 0.070 |\n\n"
        "tracked / plain step: 1.005 wall, 1.002 CPU\ndevice augmentation / plain step: 7.3% wall, 7.0% CPU\n"
    )
    tracked, augment = gpu_check.parse_tracking(tracking)
    assert tracked[1] == "ok" and "1.005 (goal <= 1.01)" in tracked[2] and "plain 1.100 ms, tracked 1.105 ms" in tracked[2]
    assert augment[1] == "missed goal" and "7.3% (goal <= 5%)" in augment[2]
    assert all(r[1] == "ok" and "dry run" in r[2] for r in gpu_check.parse_tracking(tracking, judge=False))
    assert gpu_check.parse_tracking("no table")[0][1] == "FAILED"
