"""The scale benchmark in its quick mode: two gloo ranks fill a sharded ledger, exchange,
plan every policy kind over the owned slices and publish the gathered decision, epoch after
epoch (the ranks launched with the C library keeping freed memory); the union of the slices
equals a dense ledger fed the same records."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.conftest import run_benchmark


@pytest.mark.timeout(300)
def test_quick_run_plans_and_publishes_over_the_sharded_ledger(tmp_path):
    out = tmp_path / "scale.json"
    result = run_benchmark("scale.py", "--quick", "--epochs", "2", "--keep-freed-memory", "--json", str(out), timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["equality"]["equal"] and figures["refused"] == []
    assert "glibc.malloc.mmap_max=0" in figures["glibc_tunables"]
    ranks = figures["runs"]
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["table_bytes_per_sample"] == pytest.approx(48 / 2, rel=0.01)  # 48 B per owned id, N / 2 owned
        assert r["snapshot_bytes_per_sample"] <= 4
        assert r["decision"]["gathered_bytes_per_sample"] == pytest.approx(3.125, rel=0.01)
        assert r["plan_s"] > 0
    # every rank holds the same gathered decision: the full plan flags and prunes
    assert ranks[0]["decision"] == ranks[1]["decision"]
    assert ranks[0]["decision"]["flagged"] > 0 and ranks[0]["decision"]["pruned"] > 0
    assert ranks[0]["snapshot_kept"] == ranks[0]["decision"]["kept"] < 100_000
    # each epoch ends in its own sync, plan and publish; the first epoch end's figures head the row
    for r in ranks:
        assert "glibc.malloc.mmap_max=0" in r["glibc_tunables"]  # the setting reached each rank's process
        assert [end["epoch"] for end in r["epoch_ends"]] == [0, 1]
        assert r["epoch_ends"][0]["plan_s"] == r["plan_s"]
        for end in r["epoch_ends"]:
            assert end["sync_plan_publish_s"] == pytest.approx(end["sync_s"] + end["plan_s"] + end["publish_s"])
            assert end["snapshot_kept"] == end["decision"]["kept"]
    assert [end["decision"] for end in ranks[0]["epoch_ends"]] == [end["decision"] for end in ranks[1]["epoch_ends"]]
    assert len(figures["epoch_ends_s"]["100000"]) == 2
