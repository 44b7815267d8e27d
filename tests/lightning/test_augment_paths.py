"""Adaptive augmentation: worker path and device path give the same sample for the same
(seed, epoch, id), at every worker count; strength comes from the snapshot."""

import numpy as np
import pytest
import torch

from curated_loader import CuratedDataModule, write_arrays
from curated_loader.augment import AmplitudeScale, Compose, GaussianNoise, Shift

pytestmark = pytest.mark.timeout(120)
N = 2000


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    out = tmp_path_factory.mktemp("signals")
    rng = np.random.default_rng(0)
    write_arrays(rng.standard_normal((N, 40)).astype(np.float32), rng.integers(0, 10, N), out, samples_per_shard=250, progress=False)
    return str(out / "train-index.json")


def signal_augment():
    return Compose([Shift(max_shift=6, field="npy"), AmplitudeScale(a_max=0.3, field="npy"), GaussianNoise(sigma_max=0.2, field="npy")])


def augmented_by_id(index, augment_on, workers, strength, epoch=0):
    dm = CuratedDataModule(index, fields=("npy", "cls"), decode=(), batch_size=256, num_workers=workers,
                           augment=signal_augment(), augment_on=augment_on, seed=11)
    dm.setup("fit")
    n = dm.train_stream.num_samples
    dm.snapshot.publish(torch.ones(n, dtype=torch.bool), None, strength, version=epoch)
    loader = dm.train_dataloader()
    loader.epoch_fn = None
    loader.set_epoch(epoch)
    out = {}
    for batch in loader:
        x, y = dm.on_after_batch_transfer(batch, 0)
        for i, row in zip(dm.batch.ids.tolist(), x):
            out[i] = row
    return out


def test_same_sample_in_either_path_and_any_worker_count(signals):
    n = N
    strength = torch.from_numpy(np.random.default_rng(0).random(n).astype(np.float32))
    strength[:200] = 0.0
    device0 = augmented_by_id(signals, "device", 0, strength)
    worker0 = augmented_by_id(signals, "worker", 0, strength)
    worker2 = augmented_by_id(signals, "worker", 2, strength)
    raw = augmented_by_id(signals, "worker", 0, torch.zeros(n))
    ids = list(range(0, n, 7))
    for i in ids:
        assert torch.equal(worker0[i], worker2[i])
        torch.testing.assert_close(device0[i], worker0[i], atol=1e-5, rtol=1e-5)
    assert all(torch.equal(worker0[i], raw[i]) for i in range(200))  # strength 0: untouched
    changed = [not torch.equal(worker0[i], raw[i]) for i in ids if i >= 200]
    assert np.mean(changed) > 0.9
    other_epoch = augmented_by_id(signals, "device", 0, strength, epoch=1)
    assert not torch.equal(other_epoch[1500], device0[1500])


def test_device_path_needs_a_batched_augmentation(signals):
    with pytest.raises(ValueError, match="batched form"):
        CuratedDataModule(signals, fields=("npy", "cls"), augment=lambda s, k: s, augment_on="device")
    with pytest.raises(ValueError, match="field 'x' is not one of fields"):
        CuratedDataModule(signals, fields=("npy", "cls"), augment=Shift(), augment_on="device")


def augmented_copies(index, augment_on, workers):
    """``{(id, copy number): augmented row}`` with ids 0..9 read three times each (resampling)."""
    dm = CuratedDataModule(index, fields=("npy", "cls"), decode=(), batch_size=64, num_workers=workers,
                           augment=signal_augment(), augment_on=augment_on, seed=11, resample=True)
    dm.setup("fit")
    dm.train_stream.with_repeats = True  # the device path asks for them itself; here both paths report them
    n = dm.train_stream.num_samples
    weight = torch.ones(n)
    weight[:10] = 3.0
    dm.snapshot.publish(torch.ones(n, dtype=torch.bool), weight, torch.full((n,), 0.8), version=0)
    loader = dm.train_dataloader()
    loader.epoch_fn = None
    loader.set_epoch(0)
    out = {}
    for batch in loader:
        repeats = batch[-1]
        x, _ = dm.on_after_batch_transfer(batch, 0)
        for i, r, row in zip(dm.batch.ids.tolist(), repeats.tolist(), x):
            out[(i, r)] = row
    return out


def test_copies_of_one_sample_differ_and_agree_across_paths(signals):
    device = augmented_copies(signals, "device", 0)
    worker = augmented_copies(signals, "worker", 2)
    for i in range(10):
        assert {r for j, r in device if j == i} == {0, 1, 2}
        copies = [device[(i, r)] for r in range(3)]
        assert not torch.equal(copies[0], copies[1]) and not torch.equal(copies[1], copies[2])
        for r in range(3):
            torch.testing.assert_close(device[(i, r)], worker[(i, r)], atol=1e-5, rtol=1e-5)
