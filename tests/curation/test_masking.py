"""The branch-free masked writes equal masked_fill_ / torch.where bit for bit."""

from __future__ import annotations

import pytest
import torch

from curated_loader.curation.masking import fill_, select_, zero_outside_


def _floats(n: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, generator=g)
    x[::7] = float("inf")
    x[1::11] = -float("inf")
    x[2::13] = float("nan")
    x[3::17] = -0.0
    return x


def _values(dtype: torch.dtype, n: int, g: torch.Generator) -> torch.Tensor:
    if dtype == torch.float32:
        return _floats(n, g)
    if dtype == torch.bool:
        return torch.rand(n, generator=g) > 0.5
    return torch.randint(-100, 100, (n,), generator=g).to(dtype)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype.is_floating_point:  # nan == nan, -0.0 != 0.0
        bits = {4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.view(bits), b.view(bits))
    return torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.int8, torch.uint8, torch.int16, torch.int32,
                                   torch.int64, torch.float64])
def test_fill_and_zero_outside_equal_masked_fill(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    x, mask = _values(dtype, 10_001, g), torch.rand(10_001, generator=g) > 0.4
    values = [False, True] if dtype == torch.bool else [0, 5, -3] if dtype != torch.uint8 else [0, 7]
    if dtype.is_floating_point:
        values += [-0.0, 0.1, float("inf"), float("nan")]
    for value in values:
        assert _same_bits(fill_(x.clone(), mask, value), x.clone().masked_fill_(mask, value)), value
    assert _same_bits(zero_outside_(x.clone(), mask), x.clone().masked_fill_(~mask, 0))


def test_select_equals_where() -> None:
    g = torch.Generator().manual_seed(4)
    out, source = _floats(9_999, g), _floats(9_999, g)
    mask = torch.rand(9_999, generator=g) > 0.5
    expected = torch.where(mask, source, out)
    assert _same_bits(select_(out, mask, source), expected)


def test_steps_give_the_bits_of_one_step(monkeypatch) -> None:
    g = torch.Generator().manual_seed(6)
    out, source, mask = _floats(5_003, g), _floats(5_003, g), torch.rand(5_003, generator=g) > 0.5
    codes = torch.randint(0, 7, (5_003,), generator=g).to(torch.int8)
    monkeypatch.setattr("curated_loader.curation.masking.MASK_BLOCK", 512)  # 10 steps, the last short
    assert _same_bits(fill_(out.clone(), mask, 2.5), out.clone().masked_fill_(mask, 2.5))
    assert _same_bits(fill_(codes.clone(), mask, 6), codes.clone().masked_fill_(mask, 6))
    assert _same_bits(zero_outside_(out.clone(), mask), out.clone().masked_fill_(~mask, 0))
    assert _same_bits(select_(out.clone(), mask, source), torch.where(mask, source, out))


def test_broadcast_masks_fall_back() -> None:
    x = torch.arange(6, dtype=torch.float32).view(2, 3)
    mask = torch.tensor([True, False, True])
    assert torch.equal(fill_(x.clone(), mask, -1.0), x.clone().masked_fill_(mask, -1.0))
