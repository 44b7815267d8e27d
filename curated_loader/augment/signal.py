"""Strength-aware augmentations for 1-D signals (``[L]`` or ``[C, L]`` per sample).

Batched forms work on ``[B, L]`` or ``[B, C, L]`` (any middle dims) with per-sample index grids
and one ``torch.gather``; there is no loop over samples.
"""

from __future__ import annotations

import math

import torch

from .base import Augmentation, Params
from .common import per_sample, signed
from .seeding import Draws

__all__ = ["Shift", "AmplitudeScale", "TimeStretch", "gather_last"]


def gather_last(x: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``x[b, ..., idx[b, i]]`` for a per-sample index grid ``idx`` of shape ``[B, L_out]``;
    positions where ``valid`` is False read 0 (``None``: every index is valid)."""
    b, length = x.shape[0], x.shape[-1]
    flat = x.reshape(b, -1, length)
    safe = idx if valid is None else idx.clamp(0, length - 1)
    out = torch.gather(flat, 2, safe.unsqueeze(1).expand(-1, flat.shape[1], -1))
    if valid is not None:
        out = torch.where(valid.unsqueeze(1), out, torch.zeros((), dtype=x.dtype, device=x.device))
    return out.reshape(*x.shape[:-1], idx.shape[-1])


class Shift(Augmentation):
    """Integer shift by up to ``round(max_shift * strength)`` steps either way.

    ``mode="circular"`` rolls the signal; ``mode="zero"`` pads with zeros.
    """

    num_draws = 1

    def __init__(self, max_shift: int = 8, mode: str = "circular", field: str = "x") -> None:
        if mode not in ("circular", "zero"):
            raise ValueError(f"mode must be 'circular' or 'zero', got {mode!r}")
        self.max_shift = int(max_shift)
        self.mode = mode
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        shift = torch.round(strength * self.max_shift * signed(draws.u(0)))
        return {"shift": shift.to(torch.int64)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        length = x.shape[-1]
        src = torch.arange(length, device=x.device).unsqueeze(0) - params["shift"].unsqueeze(1)
        if self.mode == "circular":
            return gather_last(x, src.remainder(length))
        return gather_last(x, src, (src >= 0) & (src < length))


class AmplitudeScale(Augmentation):
    """Multiply the signal by a factor drawn uniformly from ``1 ± a_max * strength``."""

    num_draws = 1

    def __init__(self, a_max: float = 0.3, field: str = "x") -> None:
        self.a_max = float(a_max)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        return {"scale": 1.0 + strength * self.a_max * signed(draws.u(0))}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x * per_sample(params["scale"], x)


class TimeStretch(Augmentation):
    """Stretch time by a factor drawn from ``1 ± s_max * strength`` about the signal's centre,
    by linear interpolation; the length is kept and samples from outside read 0."""

    num_draws = 1

    def __init__(self, s_max: float = 0.2, field: str = "x") -> None:
        if not 0.0 <= s_max < 1.0:
            raise ValueError("s_max must be in [0, 1)")
        self.s_max = float(s_max)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        return {"factor": 1.0 + strength * self.s_max * signed(draws.u(0))}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        length = x.shape[-1]
        centre = (length - 1) / 2.0
        # zeros on both sides wide enough for the strongest stretch: |pos - centre| <= centre / (1 - s_max)
        pad = math.ceil(centre * self.s_max / (1.0 - self.s_max)) + 2
        grid = torch.arange(pad, length + pad, device=x.device, dtype=torch.float32).unsqueeze(0)
        pos = (centre + pad) + (grid - (centre + pad)) / params["factor"].unsqueeze(1)  # in padded coordinates
        left = torch.floor(pos)
        frac = (pos - left).unsqueeze(1).to(x.dtype)
        i0 = left.to(torch.int64)
        padded = torch.nn.functional.pad(x.reshape(x.shape[0], -1, length), (pad, pad))
        ends = gather_last(padded, torch.cat([i0, i0 + 1], 1))  # left and right neighbours, one gather
        x0, x1 = ends[..., :length], ends[..., length:]
        return (x0 + frac * (x1 - x0)).reshape(x.shape)
