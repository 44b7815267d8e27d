"""Strength-aware augmentations for 1-D signals (``[L]`` or ``[C, L]`` per sample).

Batched forms work on ``[B, L]`` or ``[B, C, L]`` (any middle dims) with per-sample index grids
and one ``torch.gather``; there is no loop over samples.
"""

from __future__ import annotations

import math

import torch

from .base import Augmentation, Params
from .common import cached_constant, per_sample
from .seeding import Draws

__all__ = ["Shift", "AmplitudeScale", "TimeStretch", "gather_last"]


def gather_last(x: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``x[b, ..., idx[b, i]]`` for a per-sample index grid ``idx`` of shape ``[B, L_out]``;
    positions where ``valid`` is False read 0 (``None``: every index is valid)."""
    b, length = x.shape[0], x.shape[-1]
    safe = idx if valid is None else idx.clamp(0, length - 1)
    if x.dim() == 2:
        out = torch.gather(x, 1, safe)
    else:
        flat = x.reshape(b, -1, length)
        out = torch.gather(flat, 2, safe.unsqueeze(1).expand(-1, flat.shape[1], -1))
    if valid is not None:
        out = torch.where(valid if out.dim() == 2 else valid.unsqueeze(1), out, 0.0)
    return out if x.dim() <= 3 else out.reshape(*x.shape[:-1], idx.shape[-1])


def _positions(length: int, device: torch.device, first: int = 0) -> torch.Tensor:
    """int64 ``[1, length]``: first, first + 1, ..., first + length - 1 (cached)."""
    return cached_constant(
        ("positions", length, first, device), lambda: torch.arange(first, first + length, device=device).unsqueeze(0)
    )


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
        shift = torch.round(strength * self.max_shift * draws.signed(0))
        return {"shift": shift.to(torch.int64)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        length = x.shape[-1]
        if self.mode == "circular":
            # wrap the per-sample shift, not every index: x[(i - s) mod L] is [x, x][i + L - (s mod L)]
            src = _positions(length, x.device, first=length) - params["shift"].remainder(length).unsqueeze(1)
            return gather_last(torch.cat([x, x], -1), src)
        src = _positions(length, x.device) - params["shift"].unsqueeze(1)
        return gather_last(x, src, (src >= 0) & (src < length))


class AmplitudeScale(Augmentation):
    """Multiply the signal by a factor drawn uniformly from ``1 ± a_max * strength``."""

    num_draws = 1

    def __init__(self, a_max: float = 0.3, field: str = "x") -> None:
        self.a_max = float(a_max)
        self.field = field

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        return {"scale": 1.0 + strength * self.a_max * draws.signed(0)}

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
        return {"factor": 1.0 + strength * self.s_max * draws.signed(0)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        length = x.shape[-1]
        pad, offsets = self._offsets(length, x.device)
        pos = offsets / params["factor"].unsqueeze(1) + ((length - 1) / 2.0 + pad)  # in padded coordinates, >= 0
        frac = torch.frac(pos).to(x.dtype)
        i0 = pos.to(torch.int64)  # truncation is the floor here
        flat = x if x.dim() == 2 else x.reshape(x.shape[0], -1, length)
        padded = torch.nn.functional.pad(flat, (pad, pad))
        x0, x1 = gather_last(padded, i0), gather_last(padded[..., 1:], i0)  # left and right neighbours
        out = torch.lerp(x0, x1, frac if flat.dim() == 2 else frac.unsqueeze(1))
        return out if flat is x else out.reshape(x.shape)

    def _offsets(self, length: int, device: torch.device) -> tuple[int, torch.Tensor]:
        """The zero padding on each side, wide enough for the strongest stretch
        (``|pos - centre| <= centre / (1 - s_max)``), and float32 ``[1, length]`` output
        positions relative to the centre, in padded coordinates (cached)."""
        centre = (length - 1) / 2.0
        pad = math.ceil(centre * self.s_max / (1.0 - self.s_max)) + 2

        def make() -> torch.Tensor:
            grid = torch.arange(pad, length + pad, device=device, dtype=torch.float32).unsqueeze(0)
            return grid - (centre + pad)

        return pad, cached_constant(("stretch_offsets", length, pad, device), make)
