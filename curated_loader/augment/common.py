"""Helpers shared by the signal and image augmentations, and the shape-agnostic noise."""

from __future__ import annotations

import torch

from .base import Augmentation, Params
from .seeding import Draws

__all__ = ["GaussianNoise", "signed", "per_sample"]


def signed(u: torch.Tensor) -> torch.Tensor:
    """Map uniforms in [0, 1) to [-1, 1)."""
    return 2.0 * u - 1.0


def per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a ``[B]`` parameter so it broadcasts against the batch ``x`` (floats take x's dtype)."""
    if v.is_floating_point():
        v = v.to(x.dtype)
    return v.reshape(-1, *([1] * (x.dim() - 1)))


class GaussianNoise(Augmentation):
    """Additive Gaussian noise with ``sigma = sigma_max * strength``.

    Works on any per-sample shape (signals and images alike; set ``field``). No clipping.
    """

    def __init__(self, sigma_max: float = 0.1, field: str = "x") -> None:
        self.sigma_max = float(sigma_max)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        return {"sigma": strength * self.sigma_max, "noise": draws.normal(0, tuple(shape[1:]))}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x + per_sample(params["sigma"], x) * params["noise"].to(x.dtype)
