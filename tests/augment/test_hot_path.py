"""Hot-path ceilings: aten ops per call (counted with a TorchDispatchMode, deterministic),
no host reads on the device path (meta tensors), per-sample repeats on the device path."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from augmentation import signal_augment
from op_counts import (
    augment_call,
    count,
    image_compose,
    record_call,
    signal_augment_call,
)

from curated_loader.augment import augment_batch, seed_of_sample

# aten ops per call on a 256-batch, as measured (goals: record <= 20, image Compose <= 300)
MAX_RECORD_OPS = 20
MAX_AUGMENT_OPS = 170
MAX_SIGNAL_AUGMENT_OPS = 92


def test_ledger_record_op_ceiling():
    ops = count(record_call())
    assert 0 < ops.total <= MAX_RECORD_OPS, ops.ops


def test_augment_batch_op_ceiling():
    ops = count(augment_call())
    assert 0 < ops.total <= MAX_AUGMENT_OPS, ops.ops


def test_signal_augment_batch_op_ceiling():
    ops = count(signal_augment_call())
    assert 0 < ops.total <= MAX_SIGNAL_AUGMENT_OPS, ops.ops


def test_device_augmentation_runs_on_meta_tensors():
    """No value is read on the host: meta tensors have none, so a host sync would raise."""
    x = torch.empty(16, 1, 28, 28, device="meta")
    out = augment_batch(image_compose(), x, torch.empty(16, device="meta"), torch.empty(16, dtype=torch.long, device="meta"), 1, 0)
    assert out.shape == x.shape and out.device.type == "meta"
    signal = torch.empty(16, 40, device="meta")
    ids, repeats = torch.empty(16, dtype=torch.long, device="meta"), torch.empty(16, dtype=torch.long, device="meta")
    out = augment_batch(signal_augment("x"), signal, torch.empty(16, device="meta"), ids, 1, 0, repeat=repeats)
    assert out.shape == signal.shape and out.device.type == "meta"


def test_per_sample_repeats_differ_and_match_the_worker_path():
    aug = image_compose()
    x = torch.rand(1, 1, 28, 28).expand(4, 1, 28, 28).contiguous()
    ids, repeats = torch.full((4,), 7), torch.tensor([0, 1, 2, 3])
    out = augment_batch(aug, x, torch.ones(4), ids, epoch=2, seed=5, repeat=repeats)
    assert all(not torch.equal(out[i], out[j]) for i in range(4) for j in range(i))
    for r in range(4):
        sample = {"png": x[r], "__id__": 7, "__seed__": 5, "__epoch__": 2, "__repeat__": r}
        worker = aug.apply_seeded(sample, 1.0, seed_of_sample(sample))["png"]
        torch.testing.assert_close(worker, out[r])
