"""The plan profile at a small N, over a dense ledger and over a sharded one (2 gloo ranks):
every repeat is timed, every stage the plan runs shows up with time, and the saved decision
covers all ids with weight 0 where not kept."""

from __future__ import annotations

import json

import pytest
import torch

from tests.benchmarks.conftest import run_benchmark


@pytest.mark.timeout(400)
@pytest.mark.parametrize("ledger", ["dense", "sharded"])
def test_profile_reports_every_stage_the_plan_runs(tmp_path, ledger):
    out, saved = tmp_path / "profile.json", tmp_path / "decision.pt"
    result = run_benchmark("plan_profile.py", "--ledger", ledger, "--size", "20000", "--repeats", "2",
                           "--json", str(out), "--save", str(saved), timeout=380)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    ranks = figures["ranks"]
    assert len(ranks) == (1 if ledger == "dense" else 2)
    ran = ["stats", "noise filters", "  small-loss", "  GMM", "InfoBatch", "  its draws", "reweighting", "strength",
           "quantiles"]
    ran += ["  AUM", "  cartography"] if ledger == "dense" else ["  default filter", "  class balance",
                                                                   "decision gather"]
    for row in ranks:
        assert len(row["wall_s"]) == len(row["cpu_s"]) == len(row["thread_cpu_s"]) == 2
        assert all(s > 0 for s in row["wall_s"])
        assert [stage for stage in ran if not row["stages_s"][stage] > 0] == []
    decision = torch.load(saved)
    assert decision["keep"].numel() == 20000 and decision["weight"][~decision["keep"]].eq(0).all()
