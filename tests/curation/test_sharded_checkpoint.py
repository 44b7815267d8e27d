"""Checkpoints of the sharded ledger: real gloo ranks record, gather the dense state to rank 0
in several chunks, and restore it into a fresh ShardedLedger of the same world size (then keep
recording like the original), of another world size, and into a dense Ledger; a dense
Ledger's state restores sharded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import Ledger, ShardedLedger
from tests.conftest import free_port
from tests.curation.test_sharded_ledger import CLASSES, N, calls

EPOCHS = 2
CHUNK = 7  # ids per rank and gather step: several steps, a short last one


def tables(ledger: Ledger | ShardedLedger) -> dict[str, torch.Tensor]:
    return {name: ledger.table(name).clone() for name in ledger.table_names}


def record_epoch(ledger: ShardedLedger, rank: int, epoch: int) -> None:
    ledger.set_epoch(epoch)
    for call in calls(rank, epoch):
        ledger.record(*call)
    ledger.sync()


def _save_and_resume(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = ShardedLedger(N, CLASSES, checkpoint_chunk=CHUNK)
        for epoch in range(EPOCHS):
            record_epoch(ledger, rank, epoch)
        state = ledger.state_dict()
        if rank == 0:
            torch.save(state, Path(out) / "sharded.pt")
        dist.barrier()
        before = tables(ledger)
        resumed = ShardedLedger(N, CLASSES, checkpoint_chunk=5)
        resumed.load_state_dict(torch.load(Path(out) / "sharded.pt", weights_only=False))
        restored, restored_epoch = tables(resumed), resumed.epoch
        for ledger_ in (ledger, resumed):  # one more epoch on both
            record_epoch(ledger_, rank, EPOCHS)
        try:
            ShardedLedger(N, CLASSES).load_state_dict(state)
            other_rank_state = "loaded"
        except KeyError as e:
            other_rank_state = str(e)
        result = {"before": before, "restored": restored, "epoch": restored_epoch, "other_rank_state": other_rank_state,
                  "continued": tables(ledger), "resumed_continued": tables(resumed), "state_keys": sorted(state)}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _restore(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = {}
        for name in ("sharded", "dense"):
            ledger = ShardedLedger(N, CLASSES)
            ledger.load_state_dict(torch.load(Path(out) / f"{name}.pt", weights_only=False))
            result[name] = tables(ledger)
        torch.save(result, Path(out) / f"restored{world}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def assert_tables_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    assert got.keys() == expected.keys(), what
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, (what, name)
        assert torch.equal(got[name].cpu(), value.cpu()), (what, name)


def union(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


@pytest.mark.timeout(300)
def test_sharded_checkpoint_restores_on_the_same_and_another_world_size_and_dense(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_save_and_resume, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    state = torch.load(tmp_path / "sharded.pt", weights_only=False)
    original = union([r["before"] for r in ranks])
    assert int(original["count"].sum()) == 2 * EPOCHS * len(calls(0, 0)) * calls(0, 0)[0][0].numel()  # every record folded

    # the state is the dense layout over all N ids
    assert (state["num_samples"], state["num_classes"], state["epoch"], state["pending"]) == (N, CLASSES, EPOCHS - 1, {})
    assert_tables_equal(state["tables"], original, "gathered state")
    # same world size: the slices come back, and recording goes on exactly as without the checkpoint
    for r in ranks:
        assert_tables_equal(r["restored"], r["before"], "restored, same world")
        assert r["epoch"] == EPOCHS - 1
        assert r["continued"].keys() == r["resumed_continued"].keys()
        for name in r["continued"]:
            assert torch.allclose(r["resumed_continued"][name].double(), r["continued"][name].double(), rtol=1e-6, atol=1e-6), name
    # rank 1's state holds the settings only, and says where the tables are
    assert "tables" not in ranks[1]["state_keys"] and "tables_on_rank" in ranks[1]["state_keys"]
    assert "gathered them on rank 0" in ranks[1]["other_rank_state"]

    # into a dense Ledger, and a dense Ledger's state back into a sharded one
    dense = Ledger(N, CLASSES)
    dense.load_state_dict(state)
    assert_tables_equal(tables(dense), original, "dense from sharded")
    torch.save(dense.state_dict(), tmp_path / "dense.pt")

    # another world size (3 ranks, uneven ranges) from both states
    mp.spawn(_restore, args=(3, free_port(), str(tmp_path)), nprocs=3, join=True)
    restored = [torch.load(tmp_path / f"restored3-{r}.pt", weights_only=False) for r in range(3)]
    assert_tables_equal(union([r["sharded"] for r in restored]), original, "3 ranks from a 2-rank state")
    assert_tables_equal(union([r["dense"] for r in restored]), original, "3 ranks from a dense state")


def test_load_state_dict_names_what_is_wrong():
    ledger = ShardedLedger(N, CLASSES)
    state = Ledger(N, CLASSES).state_dict()
    with pytest.raises(ValueError, match=f"has {N + 1} samples, this ledger {N}"):
        ledger.load_state_dict({**state, "num_samples": N + 1})
    del state["tables"]["loss_sum"]
    with pytest.raises(KeyError, match="tables.loss_sum"):
        ledger.load_state_dict(state)


def test_one_process_state_dict_is_the_dense_state():
    sharded, dense = ShardedLedger(N, CLASSES, checkpoint_chunk=CHUNK), Ledger(N, CLASSES)
    for call in calls(0, 0):
        sharded.record(*call)
        dense.record(*call)
    assert_tables_equal(sharded.state_dict()["tables"], dense.state_dict()["tables"], "one process")
