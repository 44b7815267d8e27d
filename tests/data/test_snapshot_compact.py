"""The snapshot's compact shared storage: at most 4 bytes per sample, documented rounding,
and worker reads of weight and strength straight from shared memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curated_loader.data.snapshot import CurationSnapshot


def test_compact_encoding_round_trips_within_the_documented_bounds():
    n = 10_001  # not a multiple of 8: the bitmask's last byte is partial
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(n, generator=g) < 0.7
    weight = torch.rand(n, generator=g) * 5 + 1e-3
    strength = torch.rand(n, generator=g)
    snapshot = CurationSnapshot(n)
    assert snapshot.bytes_per_sample <= 4
    snapshot.publish(keep, weight, strength, version=5)
    assert torch.equal(snapshot.keep, keep)
    assert torch.allclose(snapshot.weight, weight, rtol=2**-11, atol=3e-8)
    assert (snapshot.strength - strength).abs().max() <= 1 / 510 + 1e-7
    kept = keep
    assert abs(float(snapshot.weight[kept].double().mean() / weight[kept].double().mean()) - 1) < 5e-4
    view = snapshot.view()
    assert view.version == 5 and view.kept_count == int(keep.sum()) and view.num_samples == n
    assert np.array_equal(view.keep, keep.numpy())
    sid = 1234
    assert float(view.weight[sid]) == float(snapshot.weight[sid]) and view.strength[sid] == float(snapshot.strength[sid])
    assert np.array_equal(np.asarray(view.strength), snapshot.strength.numpy())
    restored = CurationSnapshot(n)
    restored.load_state_dict(snapshot.state_dict())
    for name in ("keep", "weight", "strength"):
        assert torch.equal(getattr(restored, name), getattr(snapshot, name)), name


def test_workers_read_weight_and_strength_in_place():
    snapshot = CurationSnapshot(100)
    view = snapshot.view()
    assert np.shares_memory(view.weight, snapshot._weight.numpy())
    assert np.shares_memory(view.strength.codes, snapshot._strength.numpy())


def test_weights_beyond_float16_are_refused():
    snapshot = CurationSnapshot(3)
    with pytest.raises(ValueError, match="weight must be at most 65504"):
        snapshot.publish(torch.ones(3, dtype=torch.bool), torch.tensor([1.0, 7e4, 1.0]))


@pytest.mark.parametrize("n", [0, 1, 8, 10_001])
def test_reset_writes_the_bytes_a_keep_all_publish_writes(n):
    """A new snapshot, and one reset after a decision, hold what publishing keep-all writes
    (the bitmask's bits past N clear), byte for byte."""
    expected = CurationSnapshot(n)
    expected.publish(torch.ones(n, dtype=torch.bool), version=-1)
    changed = CurationSnapshot(n)
    changed.publish(torch.zeros(n, dtype=torch.bool), torch.full((n,), 2.0), torch.full((n,), 0.5), version=3)
    changed.reset()
    for snapshot in (CurationSnapshot(n), changed):
        assert snapshot.version == -1
        for name in ("_bits", "_weight", "_strength"):
            assert torch.equal(getattr(snapshot, name), getattr(expected, name)), name
