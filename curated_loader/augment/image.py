"""Strength-aware augmentations for float images (``[C, H, W]`` per sample, values in [0, 1]).

Parameters are drawn per sample with :func:`~curated_loader.augment.seeding.uniform`; the pixel
work is done by kornia's functional ops on the whole batch (kornia's own random modules draw from
a global generator, which cannot reproduce a sample's parameters from its seed). kornia is
imported when an op first runs, so the package imports without it.
"""

from __future__ import annotations

import math

import torch

from .base import Augmentation, Params
from .common import cached_constant, per_sample
from .seeding import Draws

__all__ = ["RandomResizedCrop", "HorizontalFlip", "ColorJitter", "RandomErasing"]


def _bchw(x: torch.Tensor) -> torch.Tensor:
    """View a ``[B, H, W]`` or ``[B, C, H, W]`` batch as 4-D."""
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"expected images [C, H, W] (batched [B, C, H, W]), got {tuple(x.shape)}")
    return x


def _pixel_centres(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``[H, W, 2]`` pixel-centre coordinates (x + 0.5, y + 0.5), cached per size and device."""

    def make() -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        return torch.stack([xs, ys], -1).to(like.device, like.dtype) + 0.5

    return cached_constant(("pixel_centres", height, width, like.device, like.dtype), make)


def _box_mask(corner: torch.Tensor, size: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """bool ``[B, H, W]``: pixels inside the integer boxes ``corner`` (x0, y0) of ``size`` (w, h),
    both ``[B, 2]``: ``x0 <= x <= x0 + w - 1`` and the same for y."""
    half = size * 0.5
    centre = (corner + half).reshape(-1, 1, 1, 2)
    return (_pixel_centres(height, width, centre) - centre).abs_().lt_(half.reshape(-1, 1, 1, 2)).all(-1)


class RandomResizedCrop(Augmentation):
    """Crop a box of area fraction ``a ~ U[1 - (1 - scale_min) * strength, 1]`` and aspect ratio
    (relative to the image's) ``r = exp(±strength * log(ratio_max))``, resized back to the input
    size. The ratio is clamped so the box fits, which keeps the area exactly ``a``."""

    num_draws = 4

    def __init__(self, scale_min: float = 0.35, ratio_max: float = 4.0 / 3.0, field: str = "png") -> None:
        if not 0.0 < scale_min <= 1.0 or ratio_max < 1.0:
            raise ValueError("need 0 < scale_min <= 1 and ratio_max >= 1")
        self.scale_min = float(scale_min)
        self.ratio_max = float(ratio_max)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        area = 1.0 - strength * (1.0 - self.scale_min) * draws.u(0)
        log_r = strength * math.log(self.ratio_max) * draws.signed(1)
        log_area = torch.log(area)
        log_r = torch.maximum(torch.minimum(log_r, -log_area), log_area)
        w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
        h = torch.sqrt(area * torch.exp(-log_r)).clamp(max=1.0)
        x0 = draws.u(2) * (1.0 - w)
        y0 = draws.u(3) * (1.0 - h)
        return {"area": area, "x0": x0, "y0": y0, "w": w, "h": h}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        from kornia.geometry.transform import warp_affine

        img = _bchw(x)
        height, width = img.shape[-2:]
        w, h = params["w"].to(img.dtype), params["h"].to(img.dtype)
        # source pixel (x0 + w * j) lands on output pixel j (pixel-centre coordinates)
        x0 = params["x0"].to(img.dtype) * (width - 1)
        y0 = params["y0"].to(img.dtype) * (height - 1)
        zero = torch.zeros_like(w)
        matrix = torch.stack(
            [torch.stack([1.0 / w, zero, -x0 / w], 1), torch.stack([zero, 1.0 / h, -y0 / h], 1)], 1
        )
        out = warp_affine(img, matrix, (height, width), padding_mode="border", align_corners=True)
        return out.reshape(x.shape)


class HorizontalFlip(Augmentation):
    """Mirror left-right with probability ``p_max * strength``."""

    num_draws = 1

    def __init__(self, p_max: float = 0.5, field: str = "png") -> None:
        self.p_max = float(p_max)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        return {"flip": draws.u(0) < self.p_max * strength}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        from kornia.geometry.transform import hflip

        return torch.where(per_sample(params["flip"], x), hflip(x), x)


class ColorJitter(Augmentation):
    """Additive brightness ``± brightness * strength`` then contrast factor
    ``1 ± contrast * strength`` about the image's grey mean; output clipped to [0, 1]."""

    num_draws = 2

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, field: str = "png") -> None:
        if not (0.0 <= brightness and 0.0 <= contrast < 1.0):
            raise ValueError("need brightness >= 0 and 0 <= contrast < 1")
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        return {
            "brightness": strength * self.brightness * draws.signed(0),
            "contrast": 1.0 + strength * self.contrast * draws.signed(1),
        }

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        from kornia.enhance import adjust_brightness, adjust_contrast_with_mean_subtraction

        img = _bchw(x)
        img = adjust_brightness(img, params["brightness"].to(img.dtype))
        img = adjust_contrast_with_mean_subtraction(img, params["contrast"].to(img.dtype))
        return img.reshape(x.shape)


class RandomErasing(Augmentation):
    """Cutout: with probability ``p_max * strength`` fill one box with ``value``; the box's area
    fraction is ``strength * U[area_min, area_max]``, aspect ratio in ``[1/ratio_max, ratio_max]``."""

    num_draws = 5

    def __init__(
        self,
        p_max: float = 0.5,
        area_min: float = 0.02,
        area_max: float = 0.25,
        ratio_max: float = 3.0,
        value: float = 0.0,
        field: str = "png",
    ) -> None:
        if not 0.0 <= area_min <= area_max <= 1.0 or ratio_max < 1.0:
            raise ValueError("need 0 <= area_min <= area_max <= 1 and ratio_max >= 1")
        self.p_max = float(p_max)
        self.area_min = float(area_min)
        self.area_max = float(area_max)
        self.ratio_max = float(ratio_max)
        self.value = float(value)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        height, width = int(shape[-2]), int(shape[-1])
        area = strength * (self.area_min + (self.area_max - self.area_min) * draws.u(1))
        ratio = torch.exp(math.log(self.ratio_max) * draws.signed(2))
        w = torch.round(torch.sqrt(area * ratio) * width).clamp(0, width)
        h = torch.round(torch.sqrt(area / ratio) * height).clamp(0, height)
        x0 = torch.floor(draws.u(3) * (width - w + 1)).clamp(max=width - w)
        y0 = torch.floor(draws.u(4) * (height - h + 1)).clamp(max=height - h)
        erase = (draws.u(0) < self.p_max * strength) & (w > 0) & (h > 0)
        return {"erase": erase, "area": area, "x0": x0, "y0": y0, "w": w, "h": h}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        img = _bchw(x)
        height, width = img.shape[-2:]
        corner = torch.stack([params["x0"], params["y0"]], -1).to(img.dtype)
        size = torch.stack([params["w"], params["h"]], -1).to(img.dtype)
        mask = _box_mask(corner, size, height, width) & params["erase"].reshape(-1, 1, 1)
        fill = torch.full((), self.value, dtype=img.dtype, device=img.device)
        return torch.where(mask.unsqueeze(1), fill, img).reshape(x.shape)
