"""The plan's random draws: one uniform per sample id, a pure function of (seed, id).

A :class:`IdDraws` hashes each *global* sample id with its seed (SplitMix64 through
:mod:`curated_loader.augment.seeding`), so a sample draws the same value whichever rank holds
its statistics and however the ids are split: a plan over a sharded ledger draws what the
dense plan draws. The plan gives each stage its own seed (``derive_seed(seed, epoch, stage)``).
Policies also accept a plain ``torch.Generator`` (dense statistics only), drawn in id order.
"""

from __future__ import annotations

import torch

from ..augment.seeding import sample_seed, uniform
from .reducer import Reducer


class IdDraws:
    """Counter-based uniforms in ``[0, 1)`` (24-bit float32), one per global sample id."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def uniform(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 uniforms for int64 ``ids`` (same device): same id, same value."""
        return uniform(sample_seed(self.seed, 0, ids), 0)

    def __repr__(self) -> str:
        return f"IdDraws(seed={self.seed})"


def uniform_draws(
    generator: IdDraws | torch.Generator | None, reducer: Reducer, n: int, device: torch.device | str
) -> torch.Tensor:
    """``n`` uniforms for the local rows of ``reducer`` (global ids ``offset ...``): per id
    from an :class:`IdDraws`, else ``torch.rand`` from ``generator`` in row order (dense
    statistics only: a sharded ledger's rows would draw differently than the dense ones)."""
    if isinstance(generator, IdDraws):
        return generator.uniform(reducer.ids(n, device))
    if reducer.distributed:
        raise ValueError("statistics of a sharded ledger need IdDraws (per-id draws), not a torch.Generator")
    return torch.rand(n, generator=generator, device=device)
