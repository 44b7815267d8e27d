"""Two real gloo processes record disjoint halves of a batch stream; after ``sync`` both hold
exactly the single-process tables and reach the same decision."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import (
    AugmentStrength,
    AUMFilter,
    CartographyFilter,
    CurationPlan,
    GMMFilter,
    InfoBatchPrune,
    Ledger,
    Reweight,
    SmallLossFilter,
)

N, CLASSES, EPOCHS, BATCH = 240, 4, 3, 16


def _stream():
    """(epoch, rank, ids, loss, logits, targets) in the order one process would see them.
    Each epoch splits a fresh permutation in two halves, one per rank (ids move between
    ranks across epochs); batches repeat some ids to exercise duplicates."""
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(CLASSES, (N,), generator=g)
    for epoch in range(EPOCHS):
        halves = torch.randperm(N, generator=g).chunk(2)
        for start in range(0, N // 2, BATCH):
            for rank, half in enumerate(halves):
                ids = half[start : start + BATCH]
                ids = torch.cat([ids, ids[:3]])  # duplicates inside one call
                logits = torch.randn(len(ids), CLASSES, generator=g) * 3
                loss = torch.nn.functional.cross_entropy(logits, labels[ids], reduction="none")
                yield epoch, rank, ids, loss, logits, labels[ids]


def _plan() -> CurationPlan:
    return CurationPlan(
        noise_filter=[SmallLossFilter(quantile=0.1), GMMFilter(), AUMFilter(), CartographyFilter()],
        prune=InfoBatchPrune(ratio=0.5),
        reweight=Reweight(),
        augment=AugmentStrength(),
        seed=11,
        num_epochs=10,
    )


def _run(rank: int | None) -> tuple[Ledger, dict]:
    ledger = Ledger(N, num_classes=CLASSES)
    current = 0
    for epoch, owner, ids, loss, logits, targets in _stream():
        if epoch != current:
            ledger.sync()
            current = epoch
        ledger.set_epoch(epoch)
        if rank is None or owner == rank:
            ledger.record(ids, loss, logits, targets)
    ledger.sync()
    ledger.sync()  # idempotent
    return ledger, _plan().decide(ledger, EPOCHS).state_dict()


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger, decision = _run(rank)
        torch.save(
            {"tables": ledger.state_dict()["tables"], "decision": decision}, Path(out) / f"rank{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_gloo_ranks_sync_to_the_single_process_tables(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    single, expected = _run(None)
    tables = single.state_dict()["tables"]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, table in tables.items():
            assert torch.equal(got["tables"][name], table), (rank, name)
        for name, value in expected.items():
            other = got["decision"][name]
            assert torch.equal(other, value) if isinstance(value, torch.Tensor) else other == value, (
                rank,
                name,
            )
    batches_per_rank = len(range(0, N // 2, BATCH))
    assert int(tables["count"].sum()) == EPOCHS * (N + 2 * 3 * batches_per_rank)
    assert 0 < int((expected["reason"] != 0).sum()) < N  # the policies did act
    assert int(tables["forget_count"].sum()) > 0 and bool((tables["ema_loss"] > 0).all())
