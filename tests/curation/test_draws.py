"""The plan's per-id draws: the lean in-place hashing gives the bits of ``seeding.uniform``."""

import pytest
import torch

from curated_loader.augment.seeding import sample_seed, uniform
from curated_loader.curation import draws
from curated_loader.curation.draws import IdDraws, uniform_draws
from curated_loader.curation.reducer import Reducer


def _reference(seed: int, ids: torch.Tensor) -> torch.Tensor:
    return uniform(sample_seed(seed, 0, ids), 0)


@pytest.mark.parametrize("seed", [0, 1, 2**62 + 12345, 987654321])
def test_uniform_equals_seeding_bit_for_bit(seed, monkeypatch):
    monkeypatch.setattr(draws, "DRAW_CHUNK", 1000)  # several blocks and a short last one
    g = torch.Generator().manual_seed(seed % 2**31)
    ids = torch.cat([torch.randint(0, 2**40, (3001,), generator=g), torch.tensor([0, 1, 2**40 - 1])])
    lean = IdDraws(seed).uniform(ids)
    assert lean.dtype == torch.float32
    assert torch.equal(lean.view(torch.int32), _reference(seed, ids).view(torch.int32))


def test_uniform_range_equals_uniform_of_the_ids(monkeypatch):
    monkeypatch.setattr(draws, "DRAW_CHUNK", 777)
    d = IdDraws(31337)
    first, n = 10**9 + 5, 5000
    assert torch.equal(d.uniform_range(first, n, "cpu"), _reference(31337, torch.arange(first, first + n)))
    assert d.uniform_range(3, 0, "cpu").numel() == 0


def test_uniform_draws_use_the_global_ids_of_the_rows():
    d = IdDraws(5)
    rows = uniform_draws(d, Reducer(100, offset=40), 60, "cpu")
    assert torch.equal(rows, _reference(5, torch.arange(40, 100)))
    assert 0.0 <= float(rows.min()) and float(rows.max()) < 1.0
