"""A real Lightning DDP run (torchrun, 2 CPU ranks over gloo, 2 loader workers each) trains the
same curated run with a dense and with a sharded ledger: every epoch's decision (kept ids,
float16 weights, strength codes) and batch counts are the same, on both ranks, and the saved
curation state (checkpoint and ``curation_state.pt``) holds the same ledger and every id's reason
and score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from curated_loader.data.writer import write_samples
from tests.conftest import free_port, id_samples

SCRIPT = Path(__file__).with_name("sharded_train.py")
ROOT = Path(__file__).resolve().parents[2]
MODES = ("dense", "sharded")


@pytest.mark.timeout(360)
def test_sharded_ledger_run_decides_as_the_dense_run(tmp_path):
    write_samples(id_samples([50] * 4 + [37]), tmp_path / "shards", samples_per_shard=50, progress=False)
    out = tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(SCRIPT), str(tmp_path / "shards" / "train-index.json"), str(out), *MODES]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=340, env=env, cwd=out, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    runs = {mode: [json.loads((out / mode / f"rank{r}.json").read_text()) for r in range(2)] for mode in MODES}
    assert [r["ledger"] for r in runs["dense"]] == ["Ledger"] * 2
    assert [r["ledger"] for r in runs["sharded"]] == ["ShardedLedger"] * 2
    for rank in runs["sharded"]:  # the callback reserved each epoch's record buffer before its first record
        reserved = [epoch.pop("buffer_entries_at_start") for epoch in rank["epochs"].values()]
        assert len(reserved) == 4 and min(reserved) > 0, reserved
    reference = runs["dense"][0]
    for rank in runs["dense"] + runs["sharded"]:
        assert rank["world"] == 2
        assert rank["epochs"] == reference["epochs"]  # batches and decisions, every epoch, both ranks
        assert rank["summary"] == reference["summary"]  # the callback's reason counts (all-reduced when sharded)
    decisions = [e["decision"] for e in reference["epochs"].values()]
    assert len(decisions[-1]["keep"]) < 237  # the last decision filtered and pruned
    assert reference["summary"]["flagged"] > 0 and reference["summary"]["pruned"] > 0
    assert len(set(decisions[-1]["weight"])) > 2 and len(set(decisions[-1]["strength"])) > 2

    # what reports read: the sharded run saves the dense run's state, every id in it
    dense_state, sharded_state = (torch.load(out / mode / "curation_state.pt", weights_only=False) for mode in MODES)
    assert torch.equal(sharded_state["decision"]["reason"], dense_state["decision"]["reason"])
    assert sharded_state["decision"]["reason"].numel() == 237
    assert torch.allclose(sharded_state["decision"]["score"], dense_state["decision"]["score"], rtol=1e-5, atol=1e-6)
    tables = dense_state["ledger"]["tables"]
    assert tables.keys() == sharded_state["ledger"]["tables"].keys()
    for name, table in tables.items():
        if name == "ema_loss":  # pad samples recorded twice in an epoch: the EMA is folded per rank (sharded.py)
            continue
        assert torch.allclose(sharded_state["ledger"]["tables"][name].double(), table.double(), rtol=1e-5, atol=1e-6), name
    (checkpoint,) = (out / "sharded" / "checkpoints").glob("*.ckpt")
    saved = next(v for k, v in torch.load(checkpoint, weights_only=False)["callbacks"].items() if "CurationCallback" in k)
    assert torch.equal(saved["decision"]["reason"], sharded_state["decision"]["reason"])
