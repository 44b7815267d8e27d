"""Image augmentations on a synthetic 3x32x32 image: identity at 0, bounds, ramp, paths agree."""

from __future__ import annotations

import math

import kornia
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
    make_sample,
)
from curated_loader.augment import (
    Draws,
    ColorJitter,
    GaussianNoise,
    HorizontalFlip,
    RandomErasing,
    RandomResizedCrop,
    sample_seed,
)

H = W = 32


def _image() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    r = xx
    g = 0.5 + 0.4 * torch.sin(6 * yy) * torch.cos(4 * xx)
    b = (xx * yy) ** 0.5
    return torch.stack([r, g, b]).clamp(0, 1)


AUGS = {
    "crop": RandomResizedCrop(scale_min=0.3),
    "flip": HorizontalFlip(p_max=0.5),
    "jitter": ColorJitter(brightness=0.3, contrast=0.4),
    "erase": RandomErasing(p_max=0.6, area_max=0.3),
    "noise": GaussianNoise(sigma_max=0.1, field="png"),
}
NAMES = list(AUGS)
KERNELS = {
    "crop": (torch.nn.functional, "grid_sample"),
    "flip": (kornia.geometry.transform, "hflip"),
    "jitter": (kornia.enhance, "adjust_contrast_with_mean_subtraction"),
}


def _draw(aug, n=1024, strength=1.0):
    return aug.params(torch.full((n,), strength), Draws.single(sample_seed(5, 0, torch.arange(n)), aug.num_draws), torch.Size([n, 3, H, W]))


@pytest.mark.parametrize("name", NAMES)
def test_identity_at_zero(name):
    check_identity_at_zero(AUGS[name], _image())


@pytest.mark.parametrize("name", NAMES)
def test_monotone_in_strength(name):
    check_monotone(AUGS[name], _image())


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_and_batched_agree(name, monkeypatch):
    check_paths_agree(AUGS[name], _image())
    check_params_agree(AUGS[name], _image(), monkeypatch)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_picklable(name):
    check_deterministic(AUGS[name], _image())
    check_picklable(AUGS[name], _image())


@pytest.mark.parametrize("name", list(KERNELS))
def test_one_pixel_kernel_call_per_batch(name, monkeypatch):
    owner, fn = KERNELS[name]
    assert calls_per_batch(AUGS[name], _image(), monkeypatch, owner, fn) == [1, 1, 1]


def test_crop_bounds():
    aug = RandomResizedCrop(scale_min=0.3, ratio_max=2.0)
    p = _draw(aug)
    assert p["area"].min() >= 0.3 - 1e-6 and p["area"].max() <= 1.0
    assert p["area"].min() < 0.35  # the full range is used at strength 1
    torch.testing.assert_close(p["w"] * p["h"], p["area"])
    assert (p["x0"] >= 0).all() and (p["x0"] + p["w"] <= 1 + 1e-6).all()
    assert (p["y0"] >= 0).all() and (p["y0"] + p["h"] <= 1 + 1e-6).all()
    ratio = p["w"] / p["h"]
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 2.0 + 1e-4
    assert _draw(aug, strength=0.5)["area"].min() >= 0.65 - 1e-6


def test_crop_resamples_the_box():
    aug = RandomResizedCrop(scale_min=0.3)
    x = torch.arange(W, dtype=torch.float32).expand(1, H, W).clone()  # value = column
    n = 8
    seeds = sample_seed(5, 0, torch.arange(n))
    p = aug.params(torch.ones(n), Draws.single(seeds, aug.num_draws), torch.Size([n, 1, H, W]))
    y = aug.batch(batch_of(x, n), torch.ones(n), seeds)
    for i in range(n):
        left = float(p["x0"][i]) * (W - 1)
        right = left + float(p["w"][i]) * (W - 1)
        expect = torch.linspace(left, right, W)
        torch.testing.assert_close(y[i, 0, H // 2], expect, atol=1e-3, rtol=0)


def test_flip_probability_and_exactness():
    aug = HorizontalFlip(p_max=0.5)
    for s, p in ((1.0, 0.5), (0.5, 0.25)):
        rate = float(_draw(aug, n=4000, strength=s)["flip"].float().mean())
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / 4000)
    n = 16
    seeds = sample_seed(5, 0, torch.arange(n))
    flip = aug.params(torch.ones(n), Draws.single(seeds, aug.num_draws), torch.Size([n, 3, H, W]))["flip"]
    y = aug.batch(batch_of(_image(), n), torch.ones(n), seeds)
    for i in range(n):
        assert torch.equal(y[i], _image().flip(-1) if flip[i] else _image())


def test_color_jitter_bounds():
    p = _draw(ColorJitter(brightness=0.3, contrast=0.4))
    assert p["brightness"].abs().max() <= 0.3 and p["brightness"].abs().max() > 0.28
    assert p["contrast"].min() >= 0.6 and p["contrast"].max() <= 1.4
    half = _draw(ColorJitter(brightness=0.3, contrast=0.4), strength=0.5)
    assert half["brightness"].abs().max() <= 0.15 and (half["contrast"] - 1).abs().max() <= 0.2
    y = ColorJitter().batch(batch_of(_image(), 64), torch.ones(64), sample_seed(5, 0, torch.arange(64)))
    assert y.min() >= 0 and y.max() <= 1


def test_erasing_box_matches_params():
    aug = RandomErasing(p_max=0.6, area_max=0.3, value=-1.0)
    n = 64
    for s in (0.5, 1.0):
        seeds = sample_seed(5, 0, torch.arange(n))
        p = aug.params(torch.full((n,), s), Draws.single(seeds, aug.num_draws), torch.Size([n, 3, H, W]))
        y = aug.batch(batch_of(_image(), n), torch.full((n,), s), seeds)
        erased = (y == -1.0).all(dim=1)  # [n, H, W]
        assert 0 < int(p["erase"].sum()) < n
        for i in range(n):
            count = int(erased[i].sum())
            if p["erase"][i]:
                assert count == int(p["w"][i] * p["h"][i])
                assert count <= s * 0.3 * H * W + (H + W) / 2 + 1  # rounding of both sides
            else:
                assert count == 0 and torch.equal(y[i], _image())


def test_grayscale_without_channel_dim():
    x = _image()[0]
    for aug in (RandomResizedCrop(), HorizontalFlip(), ColorJitter(), RandomErasing()):
        out = aug(make_sample(x, "png", 1), 1.0)["png"]
        assert out.shape == x.shape
