"""Publishing a decision already in the compact format (``CurationSnapshot.publish_packed``):
the same shared arrays as encoding the tensors (``publish``), for ranges that start anywhere in
a bitmask byte, and the same refusals of bad weights, before anything changes."""

from __future__ import annotations

import math

import pytest
import torch

from curated_loader.curation.decision import _pack_into
from curated_loader.data.snapshot import CurationSnapshot, PackedDecision, pack_decision


def decision_columns(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(n, generator=g) < 0.6
    weight = torch.where(keep, torch.rand(n, generator=g) * 4, torch.zeros(()))
    weight[:3] = torch.tensor([0.0, -0.0, 65504.0])  # zero, negative zero, the float16 maximum
    return keep, weight, torch.rand(n, generator=g)


def packed_rows(keep, weight, strength, ranges, size: int = 0) -> PackedDecision:
    """Each range packed by ``pack_decision`` (padded with keep 0 to ``size``, by default the
    widest range's multiple of 16), one row per range."""
    size = size or 16 * math.ceil(max(hi - lo for lo, hi in ranges) / 16)
    rows = []
    for lo, hi in ranges:
        pad = size - (hi - lo)
        cols = [torch.cat([t[lo:hi], t.new_zeros(pad)]) for t in (keep, weight, strength)]
        rows.append(pack_decision(*cols))
    return PackedDecision(torch.stack(rows), tuple(ranges))


def raw(snapshot: CurationSnapshot) -> list[torch.Tensor]:
    return [snapshot._bits.clone(), snapshot._weight.clone(), snapshot._strength.clone(), snapshot._version.clone()]


@pytest.mark.parametrize("ranges", [
    [(0, 16), (16, 32)],                 # byte-aligned
    [(0, 3), (3, 20), (20, 37)],         # every boundary inside a byte, a short first range
    [(0, 501), (501, 1001)],             # two ranks' owned ranges of N = 1001
    [(0, 13), (13, 13), (13, 14)],       # an empty range and a one-sample one
])
def test_packed_publish_writes_what_publish_writes(ranges):
    n = ranges[-1][1]
    keep, weight, strength = decision_columns(n)
    encoded, copied = CurationSnapshot(n), CurationSnapshot(n)
    encoded.publish(keep, weight, strength, version=7)
    copied._bits.fill_(0xFF)  # stale bits everywhere: every bit must be written
    copied.publish_packed(packed_rows(keep, weight, strength, ranges), version=7)
    for a, b in zip(raw(encoded), raw(copied)):
        assert torch.equal(a, b)
    assert copied.version == 7 and torch.equal(copied.keep, keep)


def test_the_gather_packs_as_pack_decision():
    n = 1000  # steps of 48 with a short last one, as Decision.gathered packs a slice
    keep, weight, strength = decision_columns(n, seed=1)
    size = 16 * math.ceil(n / 16) + 16  # padding beyond the slice, as a shorter rank's row has
    out = torch.zeros(size * 25 // 8, dtype=torch.uint8)
    import curated_loader.curation.decision as decision_module

    chunk, decision_module.GATHER_CHUNK = decision_module.GATHER_CHUNK, 48
    try:
        _pack_into(out, keep, weight, strength, size)
    finally:
        decision_module.GATHER_CHUNK = chunk
    assert torch.equal(out, packed_rows(keep, weight, strength, [(0, n)], size).rows[0])


@pytest.mark.parametrize("bad, problem", [(-0.5, "-0.5"), (float("inf"), "inf"), (float("nan"), "nan"),
                                          (-float("inf"), "-inf")])
def test_packed_publish_refuses_a_bad_weight_and_changes_nothing(bad, problem):
    n = 40
    keep, weight, strength = decision_columns(n)
    weight[33] = bad  # in the second range
    snapshot = CurationSnapshot(n)
    before = raw(snapshot)
    with pytest.raises(ValueError, match=rf"finite and non-negative, got {problem} for sample 33"):
        snapshot.publish_packed(packed_rows(keep, weight, strength, [(0, 21), (21, 40)]), version=3)
    for a, b in zip(before, raw(snapshot)):
        assert torch.equal(a, b)
    assert snapshot.version == -1


def test_packed_publish_refuses_ranges_that_do_not_tile_the_samples():
    keep, weight, strength = decision_columns(32)
    snapshot = CurationSnapshot(40)
    with pytest.raises(ValueError, match=r"do not tile \[0, 40\)"):
        snapshot.publish_packed(packed_rows(keep, weight, strength, [(0, 16), (16, 32)]))
