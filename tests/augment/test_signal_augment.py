"""Signal augmentations: identity at 0, bounds at 1, monotone ramp, both paths agree."""

from __future__ import annotations

import math

import pytest
import torch

from aug_checks import (
    batch_of,
    calls_per_batch,
    check_deterministic,
    check_identity_at_zero,
    check_monotone,
    check_paths_agree,
    check_params_agree,
    check_picklable,
)
from curated_loader.augment import AmplitudeScale, Draws, GaussianNoise, Shift, TimeStretch, sample_seed

L = 40


def _signal(channels: bool) -> torch.Tensor:
    t = torch.linspace(0, 4 * math.pi, L)
    x = torch.sin(t) + 0.3 * torch.sin(3.1 * t + 0.4)
    return x.unsqueeze(0) if channels else x


AUGS = {
    "shift_circular": Shift(max_shift=6),
    "shift_zero": Shift(max_shift=6, mode="zero"),
    "scale": AmplitudeScale(a_max=0.3),
    "noise": GaussianNoise(sigma_max=0.2),
    "stretch": TimeStretch(s_max=0.25),
}
CASES = [pytest.param(a, c, id=f"{k}-{'CL' if c else 'L'}") for k, a in AUGS.items() for c in (False, True)]


@pytest.mark.parametrize("aug,channels", CASES)
def test_identity_at_zero(aug, channels):
    check_identity_at_zero(aug, _signal(channels))


@pytest.mark.parametrize("aug,channels", CASES)
def test_monotone_in_strength(aug, channels):
    check_monotone(aug, _signal(channels))


@pytest.mark.parametrize("aug,channels", CASES)
def test_per_sample_and_batched_agree(aug, channels, monkeypatch):
    x = _signal(channels)
    check_paths_agree(aug, x)
    check_params_agree(aug, x, monkeypatch)


@pytest.mark.parametrize("aug,channels", CASES)
def test_deterministic_and_picklable(aug, channels):
    check_deterministic(aug, _signal(channels))
    check_picklable(aug, _signal(channels))


@pytest.mark.parametrize("name", ["shift_circular", "shift_zero", "stretch"])
def test_vectorized_single_gather_pass(name, monkeypatch):
    counts = calls_per_batch(AUGS[name], _signal(True), monkeypatch, torch, "gather")
    assert counts[0] == counts[1] == counts[2] > 0


def _draw(aug, n=512, strength=1.0):
    return aug.params(torch.full((n,), strength), Draws.single(sample_seed(3, 0, torch.arange(n)), aug.num_draws), torch.Size([n, L]))


def test_shift_bounds_and_semantics():
    aug = Shift(max_shift=5)
    shift = _draw(aug)["shift"]
    assert shift.abs().max() == 5 and shift.min() == -5
    assert set(shift.tolist()) == set(range(-5, 6))
    assert _draw(aug, strength=0.5)["shift"].abs().max() <= 3  # round(2.5)
    x = torch.arange(L, dtype=torch.float32)
    n = 16
    seeds = sample_seed(3, 0, torch.arange(n))
    k = aug.params(torch.ones(n), Draws.single(seeds, aug.num_draws), torch.Size([n, L]))["shift"]
    y = aug.batch(batch_of(x, n), torch.ones(n), seeds)
    yz = Shift(max_shift=5, mode="zero").batch(batch_of(x, n), torch.ones(n), seeds)
    for i in range(n):
        ki = int(k[i])
        assert torch.equal(y[i], torch.roll(x, ki))
        expect = torch.roll(x, ki)
        if ki > 0:
            expect[:ki] = 0
        elif ki < 0:
            expect[ki:] = 0
        assert torch.equal(yz[i], expect)


def test_amplitude_scale_bounds():
    scale = _draw(AmplitudeScale(a_max=0.3))["scale"]
    assert scale.min() >= 0.7 and scale.max() <= 1.3
    assert scale.min() < 0.75 and scale.max() > 1.25
    half = _draw(AmplitudeScale(a_max=0.3), strength=0.5)["scale"]
    assert half.min() >= 0.85 and half.max() <= 1.15


def test_time_stretch_bounds_and_length():
    aug = TimeStretch(s_max=0.25)
    factor = _draw(aug)["factor"]
    assert factor.min() >= 0.75 and factor.max() <= 1.25
    x = _signal(True)
    y = aug.batch(batch_of(x, 8), torch.ones(8), sample_seed(3, 0, torch.arange(8)))
    assert y.shape == (8, 1, L)


def test_time_stretch_is_linear_interpolation():
    aug = TimeStretch(s_max=0.5)
    x = torch.arange(L, dtype=torch.float64)  # a ramp stays a ramp about the centre
    seeds = sample_seed(3, 0, torch.arange(4))
    f = aug.params(torch.ones(4), Draws.single(seeds, aug.num_draws), torch.Size([4, L]))["factor"].double()
    y = aug.batch(batch_of(x, 4), torch.ones(4), seeds)
    c = (L - 1) / 2
    for i in range(4):
        expect = c + (x - c) / f[i]
        inside = (expect >= 0) & (expect <= L - 1)
        torch.testing.assert_close(y[i][inside], expect[inside], atol=1e-4, rtol=0)


def test_noise_sigma_matches_strength():
    x = torch.zeros(L)
    n = 512
    for s in (0.25, 1.0):
        y = GaussianNoise(sigma_max=0.2).batch(batch_of(x, n), torch.full((n,), s), sample_seed(3, 0, torch.arange(n)))
        assert abs(float(y.std()) - 0.2 * s) < 0.01 * s


def test_circular_shift_wraps_shifts_longer_than_the_signal():
    aug = Shift(max_shift=3 * L)
    x = torch.arange(L, dtype=torch.float32).unsqueeze(0)  # [C=1, L]
    n = 64
    seeds = sample_seed(4, 1, torch.arange(n))
    k = aug.params(torch.ones(n), Draws.single(seeds, aug.num_draws), torch.Size([n, 1, L]))["shift"]
    assert k.abs().max() > L and (k < 0).any()
    y = aug.batch(batch_of(x, n), torch.ones(n), seeds)
    for i in range(n):
        assert torch.equal(y[i], torch.roll(x, int(k[i]), -1))
