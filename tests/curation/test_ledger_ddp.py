"""Two real gloo processes record disjoint halves of a batch stream; after ``sync`` both hold
exactly the single-process tables and reach the same decision, with at most 3 collectives per
``sync``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ledger_replay import BATCH, EPOCHS, FIXTURE, N, assert_same_decision, replay

from curated_loader.curation import Ledger
from tests.conftest import free_port

MAX_COLLECTIVES_PER_SYNC = 3


def _counting_hooks():
    """Stand-ins for ``dist.all_reduce`` and ``Ledger.sync`` that count all-reduce calls per
    ``sync`` into the returned list."""
    per_sync: list[int] = []
    real_all_reduce, real_sync = dist.all_reduce, Ledger.sync

    def counting_all_reduce(*args, **kwargs):
        per_sync[-1] += 1
        return real_all_reduce(*args, **kwargs)

    def counting_sync(self):
        per_sync.append(0)
        return real_sync(self)

    return per_sync, counting_all_reduce, counting_sync


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    per_sync, counting_all_reduce, counting_sync = _counting_hooks()
    try:
        dist.all_reduce, Ledger.sync = counting_all_reduce, counting_sync
        ledger, decision = replay(rank)
        torch.save(
            {"tables": ledger.state_dict()["tables"], "decision": decision, "collectives": per_sync},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_gloo_ranks_sync_to_the_single_process_tables(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    single, expected = replay(None)
    recorded = torch.load(FIXTURE)["decision"]  # made before the ledger was packed
    tables = single.state_dict()["tables"]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, table in tables.items():  # sums grouped per epoch and rank: float rounding
            assert torch.allclose(got["tables"][name].double(), table.double(), rtol=1e-6, atol=1e-6), (rank, name)
        assert_same_decision(got["decision"], expected)
        assert_same_decision(got["decision"], recorded)
        collectives = got["collectives"]
        assert len(collectives) >= EPOCHS + 2 and 0 < max(collectives) <= MAX_COLLECTIVES_PER_SYNC, collectives
    batches_per_rank = len(range(0, N // 2, BATCH))
    assert int(tables["count"].sum()) == EPOCHS * (N + 2 * 3 * batches_per_rank)
    assert 0 < int((expected["reason"] != 0).sum()) < N  # the policies did act
    assert int(tables["forget_count"].sum()) > 0 and bool((tables["ema_loss"] > 0).all())
