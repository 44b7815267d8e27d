"""A new keep mask between epochs reaches persistent workers; pruned samples are never decoded."""

import numpy as np
import pytest
import torch

from curated_loader.data.pipeline import CuratedLoader, CuratedStream

SIZES = [40, 25, 60, 35]
N = sum(SIZES)
pytestmark = pytest.mark.timeout(120)


class CountingNpyDecoder:
    """Decodes the ``.npy`` fixture members and counts decodes per id in shared memory."""

    def __init__(self, n: int) -> None:
        self.counts = torch.zeros(n, dtype=torch.int64).share_memory_()

    def __call__(self, key: str, data: bytes):
        if key != ".npy":
            return None
        import io

        value = np.load(io.BytesIO(data))
        self.counts[int(value[0])] += 1
        return value


@pytest.mark.parametrize("mode", ["stream", "indexed"])
def test_keep_mask_reaches_persistent_workers_and_skips_decode(make_shards, mode):
    decoder = CountingNpyDecoder(N)
    ds = CuratedStream(make_shards(SIZES), fields=("npy", "cls"), batch_size=16, mode=mode, decode=(decoder,))
    loader = CuratedLoader(ds, num_workers=2, persistent_workers=True)
    first = torch.cat([b[2] for b in loader])
    assert sorted(first.tolist()) == list(range(N))
    full_io = ds.control.io_counts()

    keep = torch.from_numpy(np.random.default_rng(0).random(N) < 0.5)
    ds.snapshot.publish(keep, version=0)
    decoder.counts.zero_()
    second = torch.cat([b[2] for b in loader])
    kept = torch.nonzero(keep).flatten()
    assert sorted(second.tolist()) == kept.tolist()
    assert torch.equal(decoder.counts, keep.long())  # each kept id decoded once, pruned never
    io = ds.control.io_counts()
    assert io["members"] == 2 * len(kept)  # npy + cls of kept samples only: pruned bytes never read
    assert io["bytes"] < 0.7 * full_io["bytes"]


def test_weights_and_version_travel_with_batches(make_shards):
    ds = CuratedStream(make_shards(SIZES), fields=("npy",), batch_size=8, decode=())
    weight = torch.linspace(0.5, 1.5, N)
    ds.snapshot.publish(torch.ones(N, dtype=torch.bool), weight, version=3)
    for x, ids, w in CuratedLoader(ds, num_workers=0):
        assert torch.equal(w, weight.half().float()[ids])  # the snapshot keeps float16 weights
    assert ds.snapshot.version == 3


def test_resampling_repeats_by_weight(make_shards):
    ds = CuratedStream(make_shards(SIZES), fields=("npy",), batch_size=8, decode=(), resample=True)
    weight = torch.zeros(N)
    weight[:10] = 3.0
    weight[10:20] = 1.0
    keep = weight > 0
    ds.snapshot.publish(keep, weight, version=0)
    batches = list(CuratedLoader(ds, num_workers=2))
    ids = torch.cat([b[1] for b in batches])
    counts = torch.bincount(ids, minlength=N)
    assert torch.equal(counts[:10], torch.full((10,), 3)) and torch.equal(counts[10:20], torch.ones(10, dtype=torch.long))
    assert counts[20:].sum() == 0
    assert all(torch.equal(b[2], torch.ones_like(b[2])) for b in batches)  # weight moved into counts


def test_shuffle_order_is_a_function_of_seed_and_epoch(make_shards):
    path = make_shards(SIZES)

    def order(seed, epoch, mode):
        ds = CuratedStream(path, fields=("npy",), batch_size=8, decode=(), seed=seed, mode=mode)
        loader = CuratedLoader(ds, num_workers=2)
        loader.set_epoch(epoch)
        return torch.cat([b[1] for b in loader]).tolist()

    for mode in ("stream", "indexed"):
        assert order(1, 0, mode) == order(1, 0, mode)
        assert order(1, 0, mode) != order(1, 1, mode)
        assert order(1, 0, mode) != order(2, 0, mode)
        assert sorted(order(1, 1, mode)) == list(range(N))
