"""Helpers shared by the signal and image augmentations, and the shape-agnostic noise."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Augmentation, Params
from .seeding import Draws, normal_words, signed

__all__ = ["GaussianNoise", "signed", "per_sample", "cached_constant"]

_CONSTANTS: dict[tuple, torch.Tensor] = {}


def cached_constant(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A constant tensor (index grids, pixel coordinates) made once per ``key``, which must
    name everything it depends on (sizes, device, dtype); the cache holds at most 64. Under
    ``torch.compile`` the constant is made in the graph instead (a cache read there would be
    guarded on, and its first fill would force a recompile)."""
    if torch.compiler.is_compiling():
        return make()
    value = _CONSTANTS.get(key)
    if value is None:
        if len(_CONSTANTS) >= 64:
            _CONSTANTS.clear()
        value = _CONSTANTS[key] = make()
    return value


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

    def element_words(self, shape: torch.Size) -> dict[int, int]:
        return {0: normal_words(shape[1:])}

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        return {"sigma": strength * self.sigma_max, "noise": draws.normal(0, tuple(shape[1:]))}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.addcmul(x, per_sample(params["sigma"], x), params["noise"].to(x.dtype))
