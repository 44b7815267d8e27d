"""Counter-based seeding: determinism, sensitivity, wrap-safe arithmetic, uniformity."""

from __future__ import annotations

import math
import random

import pytest
import torch

from aug_checks import ks_critical, ks_statistic
from curated_loader.augment import fold_in, normal, sample_seed, seed_of_sample, uniform
from curated_loader.augment import seeding

M64 = (1 << 64) - 1


def _splitmix64_output(x: int) -> int:
    """SplitMix64's output function, written out from its definition."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def test_mix64_matches_the_python_reference_bit_for_bit():
    rng = random.Random(0)
    values = [0, 1, M64, M64 - 1, 1 << 63, (1 << 63) - 1] + [rng.getrandbits(64) for _ in range(5000)]
    got = seeding.mix64(torch.tensor([_signed(v) for v in values], dtype=torch.int64)).tolist()
    assert got == [_signed(_splitmix64_output(v)) for v in values]
    assert [seeding.mix64_reference(v) for v in values[:50]] == [_splitmix64_output(v) for v in values[:50]]


def test_sample_seed_deterministic_and_per_sample_repeats():
    ids = torch.arange(10)
    a = sample_seed(3, 1, ids)
    assert a.dtype == torch.int64 and a.shape == (10,)
    assert torch.equal(a, sample_seed(3, 1, ids, 0))
    assert torch.equal(a, sample_seed(torch.tensor(3), torch.tensor(1), ids, torch.zeros(10, dtype=torch.long)))
    assert int(a[4]) == int(sample_seed(3, 1, torch.tensor([4]))[0])
    repeats = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    per_sample = sample_seed(3, 1, ids, repeats)
    for i, r in enumerate(repeats.tolist()):
        assert int(per_sample[i]) == int(sample_seed(3, 1, ids[i : i + 1], r)[0])
    with pytest.raises(ValueError, match="epoch must be one value on the host"):
        sample_seed(3, torch.tensor([1, 2]), ids)


@pytest.mark.parametrize("change", ["seed", "epoch", "id", "repeat"])
def test_every_input_changes_the_seed(change):
    base = dict(seed=3, epoch=1, ids=torch.arange(1000), repeat=0)
    other = dict(base)
    other[change if change != "id" else "ids"] = {
        "seed": 4, "epoch": 2, "id": torch.arange(1000) + 1000, "repeat": 1
    }[change]
    assert not (sample_seed(**base) == sample_seed(**other)).any()


def test_no_collisions_and_extreme_inputs():
    ids = torch.arange(200_000)
    assert torch.unique(sample_seed(0, 0, ids)).numel() == ids.numel()
    big = torch.tensor([0, 2**39, 2**40 - 1, 12345])
    s = sample_seed(-(2**63), 2**31 + 5, big, 2**22)
    assert torch.unique(s).numel() == 4
    assert torch.equal(s, sample_seed(-(2**63), 2**31 + 5, big, 2**22))


def test_seed_of_sample_matches_vectorized_form():
    sample = {"__id__": 17, "__epoch__": 4, "__seed__": 9, "__repeat__": 2, "__key__": "k", "__url__": "u"}
    assert torch.equal(seed_of_sample(sample), sample_seed(9, 4, torch.tensor([17]), 2))


def test_uniform_shape_range_and_batch_independence():
    seeds = sample_seed(1, 0, torch.arange(64))
    u = uniform(seeds, 3, (5, 7))
    assert u.shape == (64, 5, 7) and u.dtype == torch.float32
    assert u.min() >= 0 and u.max() < 1
    assert torch.equal(uniform(seeds[10:11], 3, (5, 7))[0], u[10])
    assert torch.equal(uniform(seeds.flip(0), 3, (5, 7)), u.flip(0))
    assert uniform(seeds, 0).shape == (64,)


def test_uniform_is_uniform_across_ids_and_elements():
    n = 50_000
    ref = torch.rand(n, generator=torch.Generator().manual_seed(0))
    across_ids = uniform(sample_seed(0, 0, torch.arange(n)), 0)
    within_one = uniform(sample_seed(0, 0, torch.tensor([5])), 0, (n,))[0]
    for u in (across_ids, within_one):
        assert ks_statistic(u, ref) < ks_critical(n, n)
        counts = torch.histc(u, bins=20, min=0, max=1)
        chi2 = float(((counts - n / 20) ** 2 / (n / 20)).sum())
        assert chi2 < 50  # 19 dof, p ~ 1e-4


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def test_streams_ids_and_elements_uncorrelated():
    n = 50_000
    seeds = sample_seed(0, 0, torch.arange(n))
    u0, u1 = uniform(seeds, 0), uniform(seeds, 1)
    bound = 5 / math.sqrt(n)
    assert abs(_corr(u0, u1)) < bound
    assert abs(_corr(u0[:-1], u0[1:])) < bound  # neighbouring ids
    e = uniform(seeds[:1], 0, (n,))[0]
    assert abs(_corr(e[:-1], e[1:])) < bound  # neighbouring elements
    ep = uniform(sample_seed(0, 1, torch.arange(n)), 0)
    assert abs(_corr(u0, ep)) < bound  # same id, next epoch


def test_normal_distribution():
    z = normal(sample_seed(2, 0, torch.arange(20)), 0, (2000,)).flatten()
    ref = torch.randn(z.numel(), generator=torch.Generator().manual_seed(1))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert ks_statistic(z, ref) < ks_critical(z.numel(), ref.numel())
    assert torch.isfinite(z).all()


def test_normal_pairs_are_cosine_then_sine_of_each_word():
    """Element 2k is r cos(a), element 2k + 1 is r sin(a), r and a from word k, bit for bit."""
    seeds = sample_seed(2, 0, torch.arange(6))
    bits = seeding._element_bits(seeds, 0, seeding.normal_words((7,)))
    u = seeding._shr(bits, 40).to(torch.float32) / (1 << 24)
    radius = torch.sqrt(-2.0 * torch.log1p(-u))
    angle = ((bits >> 16) & ((1 << 24) - 1)).to(torch.float32) * (2.0 * torch.pi / (1 << 24))
    expect = torch.stack([torch.cos(angle) * radius, torch.sin(angle) * radius], -1).reshape(6, -1)[:, :7]
    assert torch.equal(normal(seeds, 0, (7,)), expect)


def test_fold_in_gives_independent_children():
    seeds = sample_seed(0, 0, torch.arange(20_000))
    c0, c1 = fold_in(seeds, 0), fold_in(seeds, 1)
    assert torch.equal(c0, fold_in(seeds, 0))
    assert not (c0 == c1).any() and not (c0 == seeds).any()
    assert abs(_corr(uniform(c0, 0), uniform(c1, 0))) < 5 / math.sqrt(seeds.numel())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_bit_for_bit():
    ids = torch.arange(4096)
    cpu = sample_seed(3, 2, ids, 1)
    gpu = sample_seed(3, 2, ids.cuda(), 1)
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
    assert torch.equal(uniform(gpu, 4, (3, 5)).cpu(), uniform(cpu, 4, (3, 5)))
