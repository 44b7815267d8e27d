"""Every kept sample exactly once per epoch, whatever the workers and ranks."""

import numpy as np
import pytest
import torch

from curated_loader.data.epoch import consumed_per_worker
from curated_loader.data.pipeline import CuratedLoader, CuratedStream

SIZES = [37, 5, 60, 12, 0, 41, 23, 8, 50, 19]  # 10 shards of unequal size, one empty
N = sum(SIZES)

pytestmark = pytest.mark.timeout(120)


def stream(index_path, **kw):
    kw.setdefault("batch_size", 16)
    return CuratedStream(index_path, fields=("npy", "cls"), decode=(), **kw)


def epoch_ids(loader):
    batches = list(loader)
    for x, y, ids, w in batches:  # content matches the id it claims
        assert torch.equal(x[:, 0].long(), ids) and torch.equal(y, ids % 10)
    return batches, (torch.cat([b[2] for b in batches]).numpy() if batches else np.zeros(0, np.int64))


@pytest.mark.parametrize("mode", ["stream", "indexed"])
@pytest.mark.parametrize("workers", [0, 2])
def test_single_rank_delivers_each_sample_once(make_shards, mode, workers):
    ds = stream(make_shards(SIZES), mode=mode)
    batches, ids = epoch_ids(CuratedLoader(ds, num_workers=workers))
    np.testing.assert_array_equal(np.sort(ids), np.arange(N))
    assert len(batches) == len(ds)


@pytest.mark.parametrize("mode", ["stream", "indexed"])
@pytest.mark.parametrize("equalize", ["pad", "cut"])
def test_two_ranks_equal_batches_cover_dataset(make_shards, mode, equalize):
    path = make_shards(SIZES)
    per_rank = []
    for rank in range(2):
        ds = stream(path, mode=mode, rank=rank, world_size=2, equalize=equalize)
        batches, ids = epoch_ids(CuratedLoader(ds, num_workers=2))
        assert len(batches) == len(ds)
        per_rank.append((len(batches), ids))
    assert per_rank[0][0] == per_rank[1][0]
    ids = np.concatenate([p[1] for p in per_rank])
    unique = np.unique(ids)
    if equalize == "pad":  # nothing lost; the extra samples are the documented pad
        np.testing.assert_array_equal(unique, np.arange(N))
    else:  # nothing repeated; the missing samples are the documented cut
        assert len(unique) == len(ids)
        assert len(ids) >= N - 2 * 2 * 16  # at most a batch per worker per rank


def test_pruned_epoch_keeps_ranks_equal(make_shards):
    path = make_shards(SIZES)
    keep = torch.zeros(N, dtype=torch.bool)
    keep[torch.arange(0, N, 10)] = True  # 90% pruned
    counts = []
    for rank in range(2):
        ds = stream(path, rank=rank, world_size=2)
        ds.snapshot.publish(keep, version=0)
        counts.append(len(list(CuratedLoader(ds, num_workers=2))))
    assert counts[0] == counts[1] > 0


def test_round_robin_consumption_model_matches_dataloader(make_shards):
    """The resume arithmetic assumes the DataLoader takes batches round-robin from the
    workers that still have some; check that against a real loader."""
    ds = stream(make_shards(SIZES), batch_size=8)
    loader = CuratedLoader(ds, num_workers=3)
    view = ds.snapshot.view()
    plan_batches = ds._plan(view, 0, 0)[1].batches[0]
    worker_of_shard = {int(s): w for w in range(3) for s in ds._plan(view, 0, w)[1].share.shards}
    shard_of_id = ds.index.locate(np.arange(N))[0]
    producers = [worker_of_shard[int(shard_of_id[int(b[2][0])])] for b in loader]
    assert len(producers) == plan_batches.sum()
    for k in range(len(producers) + 1):
        seen = np.bincount(producers[:k], minlength=3)
        np.testing.assert_array_equal(consumed_per_worker(plan_batches, k), seen)
