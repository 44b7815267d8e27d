"""The epoch-end profiling scripts at a small N: the sync phase by phase (every phase of both
syncs, each rank's table checksum) and the decision's gather and publish (every rank's snapshot
keeps the same samples), each over two gloo ranks; what a fresh GiB costs; the masked writes against the ops they replace; the plan's memory by policy."""

from __future__ import annotations

import json
import re

import pytest

from tests.benchmarks.conftest import run_benchmark


@pytest.mark.timeout(180)
def test_sync_profile_prints_every_phase_of_every_sync():
    result = run_benchmark("sync_profile.py", "--size", "2e4", "--repeats", "2", timeout=170)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in (0, 1):
        for sync in (0, 1):
            line = next(x for x in result.stdout.splitlines() if x.startswith(f"rank {rank} sync {sync}:"))
            for phase in ("codes", "counts", "pack", "all_to_all", "sort", "fold"):
                assert re.search(rf"\| {phase} [\d.]+ s, cpu [\d.]+ s, \d+ faults", line), (phase, line)
    assert len(re.findall(r"rank \d owned table checksum -?[\d.]+", result.stdout)) == 2


@pytest.mark.timeout(180)
def test_gather_publish_keeps_the_same_samples_on_both_ranks():
    result = run_benchmark("gather_publish.py", "--size", "2e4", "--repeats", "1", timeout=170)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    kept = re.search(r"snapshot kept: \[(\d+), (\d+)\]", result.stdout)
    assert kept and kept.group(1) == kept.group(2) and 0 < int(kept.group(1)) < 20_000


@pytest.mark.timeout(120)
def test_fresh_memory_reports_each_gib(tmp_path):
    out = tmp_path / "fresh.json"
    result = run_benchmark("fresh_memory.py", "--gib", "1", "--json", str(out), timeout=110)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["gib_held"] == 1 and row["minor_faults"] > 0 and row["seconds"] > 0 and row["us_per_fault"] > 0


@pytest.mark.timeout(120)
def test_masked_writes_give_the_same_results_as_the_ops_they_replace(tmp_path):
    out = tmp_path / "masked.json"
    result = run_benchmark("masked_writes.py", "--size", "1e5", "--repeats", "1", "--json", str(out), timeout=110)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 6 and all(row["same"] for row in rows)


@pytest.mark.timeout(180)
def test_plan_memory_reports_every_policy_and_the_gather():
    result = run_benchmark("plan_memory.py", "--size", "2e4", timeout=170)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("loss_margin", "gmm", "small_loss", "sample_weights", "infobatch", "strength", "decision gather"):
        assert re.search(rf"^\| {stage} \| -?[\d.]+ \| -?[\d.]+ \| -?[\d.]+ \|$", result.stdout, re.M), stage
