"""The sharded ledger: real gloo ranks (two, and three) record overlapping random batches
(duplicates included); the union of the owners' slices equals a dense single-process Ledger fed the same
records in the documented order, with at most two collectives per epoch."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import Ledger, ShardedLedger, make_ledger
from curated_loader.curation.sharded import (
    AUTO_SHARD_MIN_SAMPLES,
    _id_runs,
    owned_range,
)
from tests.conftest import free_port

N, CLASSES, EPOCHS, CALLS, BATCH = 101, 4, 3, 4, 24
MAX_COLLECTIVES_PER_EPOCH = 2


def calls(rank: int, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    """One rank's record calls of one epoch: random ids over all of [0, N) (so both ranks
    overlap and batches repeat ids); the last two calls have no logits, the very last no
    targets either."""
    g = torch.Generator().manual_seed(1000 * epoch + rank)
    out = []
    for i in range(CALLS):
        ids = torch.randint(N, (BATCH,), generator=g)
        loss = torch.rand(BATCH, generator=g) * 3
        logits = torch.randn(BATCH, CLASSES, generator=g)
        targets = ids % CLASSES
        out.append([(ids, loss), (ids, loss, None, targets)][i - CALLS + 2] if i >= CALLS - 2 else (ids, loss, logits, targets))
    return out


def kind(call: tuple) -> int:
    """0: logits, 1: no logits but targets, 2: loss only (the order owners fold them in)."""
    return 2 if len(call) == 2 else int(call[2] is None)


def restrict(call: tuple, lo: int, hi: int) -> tuple:
    """The entries of ``call`` whose id lies in ``[lo, hi)``."""
    inside = (call[0] >= lo) & (call[0] < hi)
    return tuple(None if t is None else t[inside] for t in call)


def dense_reference(world: int) -> Ledger:
    """A single-process Ledger fed in the sharded ledger's order: per epoch and owner, the
    owner's calls restricted to its ids, then each other rank's entries (by kind) as one call."""
    dense = Ledger(N, CLASSES)
    for epoch in range(EPOCHS):
        dense.set_epoch(epoch)
        for owner in range(world):
            lo, hi = owned_range(N, owner, world)
            for call in calls(owner, epoch):
                dense.record(*restrict(call, lo, hi))
            for sender in (r for r in range(world) if r != owner):
                parts = [restrict(c, lo, hi) for c in calls(sender, epoch)]
                for k in range(3):
                    group = [p for p in parts if kind(p) == k]
                    dense.record(*(None if column[0] is None else torch.cat(column) for column in zip(*group)))
    return dense


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    counted: list[str] = []
    real = {name: getattr(dist, name) for name in ("all_to_all_single", "all_reduce", "all_gather", "broadcast")}

    def counting(name):
        def call(*args, **kwargs):
            counted.append(name)
            return real[name](*args, **kwargs)

        return call

    try:
        for name in real:
            setattr(dist, name, counting(name))
        ledger = ShardedLedger(N, CLASSES, fold_chunk=5)  # several fold steps, some ids above 5 entries
        per_epoch = []
        for epoch in range(EPOCHS):
            ledger.set_epoch(epoch)
            for call in calls(rank, epoch):
                ledger.record(*call)
            before = len(counted)
            ledger.sync()
            per_epoch.append(counted[before:])
        stats = ledger.stats()
        tables = {name: ledger.table(name).clone() for name in ledger.table_names}
        torch.save({"tables": tables, "stats": stats, "collectives": per_epoch}, Path(out) / f"rank{rank}.pt")
    finally:
        for name, fn in real.items():
            setattr(dist, name, fn)
        dist.destroy_process_group()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world", [2, 3])  # 3: uneven ranges, two senders per owner
def test_owner_slices_of_gloo_ranks_equal_the_dense_ledger(tmp_path, world):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    dense = dense_reference(world)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for name in dense.table_names:
        union = torch.cat([g["tables"][name] for g in got])
        expected = dense.table(name)
        assert union.shape == expected.shape, name
        assert torch.allclose(union.double(), expected.double(), rtol=1e-5, atol=1e-5), name
    dense_stats = dense.stats()
    assert [g["stats"].num_seen for g in got] == [dense_stats.num_seen] * world  # counts over all ranks
    for r, g in enumerate(got):
        lo, hi = owned_range(N, r, world)
        assert (g["stats"].offset, g["stats"].total_samples, g["stats"].num_samples) == (lo, N, hi - lo)
        assert torch.allclose(g["stats"].mean_loss, dense_stats.mean_loss[lo:hi], rtol=1e-5, atol=1e-6)
        assert all(c == ["all_to_all_single"] * MAX_COLLECTIVES_PER_EPOCH for c in g["collectives"]), g["collectives"]
    # the stream did exercise what the equality is about
    assert int(dense.table("count").sum()) == world * EPOCHS * CALLS * BATCH
    assert int(dense.table("forget_count").sum()) > 0
    assert int((dense.table("count") > world * EPOCHS).sum()) > 0  # duplicates


def _bad_id_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = ShardedLedger(N, CLASSES)
        ledger.record(torch.tensor([1, N - 1, N + rank]) if rank == 1 else torch.tensor([1, N - 1]), torch.ones(3 if rank else 2))
        try:
            ledger.sync()
            message = "no error"
        except ValueError as e:
            message = str(e)
        Path(out, f"rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_an_id_out_of_range_on_one_rank_raises_on_every_rank_without_a_hang(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_bad_id_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank1.txt").read_text() == f"ledger record has id {N + 1} outside [0, {N})"
    assert (tmp_path / "rank0.txt").read_text() == f"another rank's ledger record has an id outside [0, {N})"


def test_one_process_sharded_ledger_matches_dense_and_checks_ids():
    sharded, dense = ShardedLedger(N, CLASSES), Ledger(N, CLASSES)
    for call in calls(0, 0):
        sharded.record(*call)
        dense.record(*call)
    sharded.sync()
    assert (sharded.lo, sharded.hi) == (0, N)
    for name in dense.table_names:
        assert torch.equal(sharded.table(name), dense.table(name)), name
    sharded.record(torch.tensor([3, N]), torch.ones(2))
    with pytest.raises(ValueError, match=f"id {N} outside"):
        sharded.sync()


def test_make_ledger_modes():
    assert type(make_ledger(10, mode="auto")) is Ledger  # one process: dense whatever N
    assert type(make_ledger(10, mode="sharded")) is ShardedLedger
    assert type(make_ledger(AUTO_SHARD_MIN_SAMPLES, mode="dense")) is Ledger
    with pytest.raises(ValueError, match="'striped'"):
        make_ledger(10, mode="striped")  # type: ignore[arg-type]


def test_id_runs_cover_everything_and_never_split_an_id():
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 2, 2, 3, 4, 4, 5])
    for size in (1, 2, 3, 5, 100):
        runs = list(_id_runs(ids, size))
        assert runs[0][0] == 0 and runs[-1][1] == ids.numel(), size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(runs)), size
        assert all(ids[e - 1] != ids[e] for _, e in runs[:-1]), (size, runs)
        assert all(e - s <= size or bool((ids[s:e] == ids[s]).all()) for s, e in runs), (size, runs)  # longer: one id


def test_owned_ranges_cover_every_id_once():
    for n, world in ((101, 2), (10, 3), (2, 4), (0, 2)):
        ranges = [owned_range(n, r, world) for r in range(world)]
        assert [i for lo, hi in ranges for i in range(lo, hi)] == list(range(n)), (n, world)


def test_sharded_record_runs_on_meta_tensors_so_it_never_reads_values_on_the_host():
    """Meta tensors have no values: any host sync in ``record`` (or its buffering) raises."""
    ledger = ShardedLedger(100, num_classes=10, device="meta")
    ids = torch.randint(100, (64,)).to("meta")
    loss = torch.rand(64, device="meta")
    ledger.record(ids, loss, torch.randn(64, 10, device="meta"), torch.randint(10, (64,)).to("meta"))
    ledger.record(ids, loss, None, torch.randint(10, (64,)).to("meta"))
    ledger.record(ids, loss)
    assert ledger.buffered == 3 * 64
