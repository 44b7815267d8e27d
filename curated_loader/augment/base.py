"""The augmentation protocol and the base class every built-in shares.

An augmentation is a picklable object with

* ``__call__(sample: dict, strength: float) -> dict`` — per sample, in loader workers;
* ``batch(x: Tensor[B, ...], strength: Tensor[B], seeds: Tensor[B]) -> Tensor[B, ...]`` —
  vectorized over a batch, on whatever device ``x`` lives.

Subclasses declare ``num_draws`` (per-sample uniforms they use) and implement only
:meth:`Augmentation.params` (parameters from those draws) and
:meth:`Augmentation.apply` (apply them to a batch). The per-sample path runs the very same two
methods on a batch of one, so both paths draw identical parameters for the same sample.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from .seeding import Draws, seed_of_sample

__all__ = ["Augmentation", "SeededAugment", "SampleAugment", "as_strength", "keep_where_zero"]

Params = dict[str, torch.Tensor]


@runtime_checkable
class SampleAugment(Protocol):
    """Any per-sample augmentation hook the loader accepts."""

    def __call__(self, sample: dict[str, Any], strength: float) -> dict[str, Any]: ...


def keep_where_zero(out: torch.Tensor, x: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Return ``x`` bit for bit wherever ``strength == 0``, ``out`` elsewhere."""
    active = (strength > 0).reshape(-1, *([1] * (x.dim() - 1)))
    return torch.where(active, out.to(x.dtype), x)


def as_strength(strength: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Strength as a float32 ``[B]`` tensor on ``x``'s device, clamped to [0, 1]."""
    s = torch.as_tensor(strength, dtype=torch.float32, device=x.device)
    return s.reshape(-1).expand(x.shape[0]).clamp(0.0, 1.0)


class SeededAugment:
    """Hook plumbing: reads the sample's seed and strength, then calls :meth:`apply_seeded`."""

    def apply_seeded(self, sample: dict[str, Any], strength: float, seeds: torch.Tensor) -> dict[str, Any]:
        """Per-sample path with an explicit 1-element seed tensor."""
        raise NotImplementedError

    def batch(self, x: torch.Tensor, strength: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Vectorized path over a batch."""
        raise NotImplementedError

    def __call__(self, sample: dict[str, Any], strength: float) -> dict[str, Any]:
        """Augment one loader sample; its seed comes from the sample's metadata keys.
        Strength 0 returns ``sample`` itself."""
        strength = float(strength)
        if strength <= 0.0:
            return sample
        return self.apply_seeded(sample, min(strength, 1.0), seed_of_sample(sample))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Augmentation(SeededAugment):
    """Base class: strength-scaled, seed-driven, same parameters in both paths."""

    field: str = "x"
    num_draws: int = 0  # per-sample uniforms params() reads as draws.u(0 .. num_draws - 1)

    def element_words(self, shape: torch.Size) -> dict[int, int]:
        """64-bit words per sample that :meth:`params` draws per stream through
        ``draws.uniform``/``draws.normal`` for a batch of ``shape`` (a composition mixes them
        with the block in one pass; an undeclared stream is mixed when drawn, same values)."""
        return {}

    def params(self, strength: torch.Tensor, draws: Draws, shape: torch.Size) -> Params:
        """Per-sample parameters (tensors with leading dim B) for a batch of ``shape``."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Apply drawn parameters to the batch ``x`` (vectorized, no per-sample loop)."""
        raise NotImplementedError

    def batch(self, x: torch.Tensor, strength: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Augment a batch; samples with strength 0 come back unchanged bit for bit."""
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=x.device)
        seeds = seeds if seeds.dim() == 1 else seeds.reshape(-1)
        return self.batch_drawn(x, strength, Draws.single(seeds, self.num_draws))

    def batch_drawn(
        self, x: torch.Tensor, strength: torch.Tensor, draws: Draws, strength_ready: bool = False
    ) -> torch.Tensor:
        """Augment a batch with draws made by the caller (a composition draws for all members
        at once). ``strength_ready``: ``strength`` already went through :func:`as_strength`."""
        strength = strength if strength_ready else as_strength(strength, x)
        return keep_where_zero(self.transform(x, strength, draws), x, strength)

    def transform(self, x: torch.Tensor, strength: torch.Tensor, draws: Draws) -> torch.Tensor:
        """``apply(x, params(...))`` for a ready strength, without restoring strength-0 samples
        (a composition restores them once, after its last member)."""
        return self.apply(x, self.params(strength, draws, x.shape))

    def apply_seeded(self, sample: dict[str, Any], strength: float, seeds: torch.Tensor) -> dict[str, Any]:
        """Per-sample path with an explicit 1-element seed tensor."""
        return self.apply_drawn(sample, strength, Draws.single(seeds.reshape(-1), self.num_draws))

    def apply_drawn(self, sample: dict[str, Any], strength: float, draws: Draws) -> dict[str, Any]:
        """Per-sample path with draws for a batch of one."""
        if strength <= 0.0:
            return sample
        if self.field not in sample:
            raise KeyError(f"{type(self).__name__}: sample has no field {self.field!r}")
        x = torch.as_tensor(sample[self.field])
        out = dict(sample)
        out[self.field] = self.batch_drawn(x.unsqueeze(0), torch.tensor([strength]), draws)[0]
        return out
