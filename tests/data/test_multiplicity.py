"""How often each sample is read in an epoch, computed by id range: equal to the whole-array
definition, and a stream-mode epoch plan that never makes a full-length array."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from curated_loader.data import epoch as epoch_module
from curated_loader.data.epoch import IdCounts, Multiplicity, epoch_rng, plan_epoch
from curated_loader.data.shards import ShardIndex
from curated_loader.data.snapshot import CurationSnapshot

N = 10_005  # not a multiple of 8: the bitmask's last byte is partial


def published(n: int, seed: int = 0) -> CurationSnapshot:
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(n, generator=g) < 0.6
    weight = torch.where(keep, torch.rand(n, generator=g) * 3, torch.zeros(()))
    snapshot = CurationSnapshot(n)
    snapshot.publish(keep, weight, torch.rand(n, generator=g), version=4)
    return snapshot


def whole_array_multiplicity(snapshot: CurationSnapshot, seed: int, epoch: int, resample: bool) -> np.ndarray:
    """The definition over all N at once: keep as 0/1, or the float16 weight of kept samples
    rounded up with probability its fraction, by one draw per id in id order."""
    keep = snapshot.keep.numpy()
    if not resample:
        return keep.astype(np.int32)
    weight = np.where(keep, snapshot._weight.numpy(), 0.0).astype(np.float64)
    floor = np.floor(weight)
    extra = epoch_rng(seed, epoch, 0).random(weight.shape[0]) < (weight - floor)
    return (floor + extra).astype(np.int32)


def test_keep_range_unpacks_any_range_of_the_bitmask():
    snapshot = published(N)
    view, keep = snapshot.view(), snapshot.keep.numpy()
    for lo, hi in [(0, N), (0, 0), (3, 3), (1, 9), (5, 17), (8, 16), (N - 5, N), (N - 13, N - 1)]:
        assert np.array_equal(view.keep_range(lo, hi), keep[lo:hi]), (lo, hi)
    assert np.array_equal(view.keep, keep) and view.kept_count == int(keep.sum())
    with pytest.raises(IndexError, match=r"\[9, 10006\) outside \[0, 10005\)"):
        view.keep_range(9, N + 1)


@pytest.mark.parametrize("resample", [False, True])
def test_ranges_and_segment_sums_equal_the_whole_array_definition(monkeypatch, resample):
    monkeypatch.setattr(epoch_module, "MULTIPLICITY_STEP", 64)  # many steps, offsets on and off their edges
    snapshot = published(N)
    expected = whole_array_multiplicity(snapshot, seed=3, epoch=2, resample=resample)
    mult = Multiplicity(snapshot.view(), seed=3, epoch=2, resample=resample)
    assert np.array_equal(mult.array(), expected)
    listed = np.repeat(np.arange(N), expected)
    assert np.array_equal(mult.repeated_ids(), listed) and mult.total() == len(listed)
    positions = np.concatenate([np.random.default_rng(1).permutation(len(listed))[:500], [0, len(listed) - 1, 3, 3]])
    assert np.array_equal(mult.ids_at(positions), listed[positions])
    with pytest.raises(IndexError, match=rf"positions must lie in \[0, {len(listed)}\)"):
        mult.ids_at(np.array([len(listed)]))
    if resample:
        assert expected.max() >= 2 and (expected[snapshot.keep.numpy()] == 0).any()  # repeats and drops both occur
    rng = np.random.default_rng(0)
    for lo, hi in [(0, 1), (7, 200), (64, 128), (N - 3, N), *map(tuple, np.sort(rng.integers(0, N, (20, 2)), axis=1))]:
        assert np.array_equal(mult[lo:hi], expected[lo:hi]), (lo, hi)
    counts = np.array([0, 64, 1, 0, 700, 63, 65, 5000, 0, 128])
    offsets = np.concatenate([[0], np.cumsum(np.append(counts, N - counts.sum()))])
    sums = mult.segment_sums(offsets)
    assert np.array_equal(sums, [expected[a:b].sum() for a, b in zip(offsets[:-1], offsets[1:])])


def test_id_counts_count_each_id_by_range():
    ids = np.array([5, 3, 5, 9, 0, 5, 3, 12])
    counts = IdCounts(ids)
    full = np.bincount(ids, minlength=16)
    for lo, hi in [(0, 16), (3, 6), (6, 9), (9, 10), (13, 16)]:
        assert np.array_equal(counts[lo:hi], full[lo:hi]), (lo, hi)


@pytest.mark.parametrize("resample", [False, True])
def test_a_stream_epoch_plan_makes_no_full_length_array(monkeypatch, resample):
    """Each worker plans every epoch: over the whole data set that must cost memory by step,
    not by N (a full-length int32 multiplicity and its int64 running sum took 12 B per sample)."""
    monkeypatch.setattr(epoch_module, "MULTIPLICITY_STEP", 1 << 14)
    n, shards = 1 << 23, 512
    snapshot = published(n)
    index = ShardIndex([f"shard-{i}.tar" for i in range(shards)], np.full(shards, n // shards))
    view = snapshot.view()
    tracemalloc.start()
    try:
        mult = Multiplicity(view, seed=0, epoch=1, resample=resample)
        plan = plan_epoch(index, mult, seed=0, epoch=1, rank=1, world_size=2, worker=0, num_workers=2, batch_size=64)
        first = mult[index.offsets[plan.share.shards[0]] : index.offsets[plan.share.shards[0] + 1]]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n // 4, f"planning took {peak} bytes for {n} samples"
    expected = whole_array_multiplicity(snapshot, 0, 1, resample)
    per_shard = expected.reshape(shards, -1).sum(1)
    assert plan.share.own == per_shard[plan.share.shards].sum() > 0  # equalized by padding: nothing cut
    assert np.array_equal(first, expected.reshape(shards, -1)[plan.share.shards[0]])


@pytest.mark.parametrize("mode", ["stream", "indexed"])
def test_a_counts_only_plan_counts_the_batches_the_full_plan_counts(mode):
    snapshot = published(N)
    index = ShardIndex([f"shard-{i}.tar" for i in range(21)], np.diff(np.linspace(0, N, 22).astype(np.int64)))
    kw = dict(seed=1, epoch=3, rank=1, world_size=2, worker=1, num_workers=3, batch_size=32, mode=mode)
    full = plan_epoch(index, Multiplicity(snapshot.view(), 1, 3, True), **kw)
    counted = plan_epoch(index, Multiplicity(snapshot.view(), 1, 3, True), **kw, counts_only=True)
    assert np.array_equal(counted.batches, full.batches) and counted.rank_batches == full.rank_batches > 0
    assert full.share.own == counted.share.own
