"""Strength-aware augmentations for float images (``[C, H, W]`` per sample, values in [0, 1]).

Parameters are drawn per sample with :func:`~curated_loader.augment.seeding.uniform`; the pixel
work runs on the whole batch: the crop as one ``grid_sample`` over a sampling grid built from
two per-sample rows (it is axis-aligned), flip and colour through kornia's functional ops
(kornia's own random modules draw from a global generator, which cannot reproduce a sample's
parameters from its seed). kornia is imported when an op first runs, so the package imports
without it.
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


def _pixel_centres(size: int, like: torch.Tensor) -> torch.Tensor:
    """``[1, size, 1]`` pixel-centre coordinates 0.5, 1.5, ..., cached per size, device and dtype."""
    return cached_constant(
        ("pixel_centres", size, like.device, like.dtype),
        lambda: (torch.arange(size).to(like.device, like.dtype) + 0.5).reshape(1, size, 1),
    )


def _box_mask(corner: torch.Tensor, size: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """bool ``[B, H, W]``: pixels inside the integer boxes ``corner`` (x0, y0) of ``size`` (w, h),
    both ``[B, 2]``: ``x0 <= x <= x0 + w - 1`` and the same for y (tested per axis, then
    combined)."""
    half = size * 0.5
    centre = (corner + half).unsqueeze(1)
    inside = (_pixel_centres(max(height, width), centre) - centre).abs_().lt(half.unsqueeze(1))  # [B, max(H, W), 2]
    return inside[:, :height, 1].unsqueeze(2) & inside[:, :width, 0].unsqueeze(1)


def _unit_grid(size: int, like: torch.Tensor) -> torch.Tensor:
    """``[1, size]``: ``size`` points evenly from -1 to 1 (grid_sample's pixel centres with
    ``align_corners=True``), cached per size, device and dtype."""
    return cached_constant(
        ("unit_grid", size, like.device, like.dtype),
        lambda: torch.linspace(-1.0, 1.0, size, dtype=like.dtype, device=like.device).unsqueeze(0),
    )


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
        img = _bchw(x)
        height, width = img.shape[-2:]
        # output pixel j samples the source at x0 + w * j (pixel-centre coordinates, align_corners):
        # in grid_sample's [-1, 1] coordinates u_src = w * u_out + (w + 2 * x0 - 1), x0 and w as
        # fractions of the image; the same for y. The crop is axis-aligned, so each axis is a row.
        axes = []
        for scale, start, size in ((params["w"], params["x0"], width), (params["h"], params["y0"], height)):
            scale = scale.to(img.dtype).unsqueeze(1)
            offset = start.to(img.dtype).unsqueeze(1).mul(2.0).add_(scale).sub_(1.0)
            axes.append(torch.addcmul(offset, scale, _unit_grid(size, img)))  # [B, size]
        gx, gy = axes
        grid = torch.stack([gx.unsqueeze(1).expand(-1, height, -1), gy.unsqueeze(2).expand(-1, -1, width)], -1)
        out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
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
