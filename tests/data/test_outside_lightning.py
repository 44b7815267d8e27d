"""The curated selection without Lightning: a webdataset stage, and a sampler over kept ids."""

import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from curated_loader import CurationSnapshot
from curated_loader.data.sampler import KeptSampler, ShardDataset
from curated_loader.data.shards import load_index
from curated_loader.data.stage import CurateStage

SIZES = [30, 12, 45]
N = sum(SIZES)
pytestmark = pytest.mark.timeout(120)


class CountingNpy:
    def __init__(self):
        self.calls = 0

    def __call__(self, key, data):
        if key == ".npy":
            import io

            self.calls += 1
            return np.load(io.BytesIO(data))
        return None


def test_stage_in_a_webdataset_pipeline_selects_before_decode(make_shards):
    index_path = make_shards(SIZES)
    urls = load_index(index_path).urls
    stage = CurateStage(index_path)
    keep = torch.zeros(N, dtype=torch.bool)
    keep[::3] = True
    stage.snapshot.publish(keep, torch.full((N,), 2.0), version=0)
    decoder = CountingNpy()
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).compose(stage).decode(decoder)
    samples = list(ds)
    ids = [s["__id__"] for s in samples]
    assert ids == list(range(0, N, 3))
    assert all(int(s["npy"][0]) == s["__id__"] for s in samples)  # content matches the id
    assert all(s["__weight__"] == 2.0 for s in samples)
    assert decoder.calls == len(ids)  # pruned samples never decoded


def test_kept_sampler_with_shard_dataset_in_a_plain_dataloader(make_shards):
    index_path = make_shards(SIZES)
    dataset = ShardDataset(index_path, fields=("npy", "cls"), decode=())
    snapshot = CurationSnapshot(N)
    keep = torch.from_numpy(np.random.default_rng(0).random(N) < 0.5)
    snapshot.publish(keep, version=0)
    sampler = KeptSampler(snapshot, seed=1)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=2)
    seen = []
    for x, y, ids in loader:
        assert torch.equal(x[:, 0].long(), ids) and torch.equal(y, ids % 10)
        seen += ids.tolist()
    assert sorted(seen) == torch.nonzero(keep).flatten().tolist()
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(list(sampler)) == sorted(first)


def test_kept_sampler_splits_ranks_evenly_and_resamples_by_weight():
    snapshot = CurationSnapshot(10)
    weight = torch.tensor([0, 0, 3, 1, 1, 1, 1, 1, 1, 0], dtype=torch.float32)
    snapshot.publish(weight > 0, weight, version=0)
    ranks = [list(KeptSampler(snapshot, resample=True, rank=r, world_size=3)) for r in range(3)]
    assert len(ranks[0]) == len(ranks[1]) == len(ranks[2]) == 3  # 9 draws over 3 ranks
    counts = np.bincount(sum(ranks, []), minlength=10)
    assert counts[2] == 3 and counts[0] == counts[1] == counts[9] == 0 and all(counts[3:9] == 1)
    uneven = [list(KeptSampler(snapshot, resample=True, rank=r, world_size=2)) for r in range(2)]
    assert len(uneven[0]) == len(uneven[1]) == 5  # 9 draws padded to 10 by wrapping around
