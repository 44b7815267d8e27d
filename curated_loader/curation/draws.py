"""The plan's random draws: one uniform per sample id, a pure function of (seed, id).

A :class:`IdDraws` hashes each *global* sample id with its seed (SplitMix64, the values of
:func:`curated_loader.augment.seeding.uniform` of ``sample_seed(seed, 0, ids)``), so a sample
draws the same value whichever rank holds its statistics and however the ids are split: a plan
over a sharded ledger draws what the dense plan draws. The plan gives each stage its own seed
(``derive_seed(seed, epoch, stage)``). Policies also accept a plain ``torch.Generator`` (dense
statistics only), drawn in id order.

The hashing here is a lean path to the same bits: the two SplitMix64 rounds run in place on
blocks of :data:`DRAW_CHUNK` ids (two int64 buffers that stay in cache, no temporaries), and
the second round skips its last xor-shift, which does not touch the 24 top bits a uniform
keeps. ``tests/curation/test_draws.py`` checks it bit for bit against ``seeding.uniform``.
"""

from __future__ import annotations

import torch

from ..augment.seeding import element_word, mix64, sample_base
from .reducer import Reducer

#: Ids hashed per step (two int64 buffers of this many entries: 4 MiB).
DRAW_CHUNK = 1 << 18
_UNIFORM_BITS = 24


class IdDraws:
    """Counter-based uniforms in ``[0, 1)`` (24-bit float32), one per global sample id."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._base = sample_base(self.seed, 0)  # sample_seed's word for (seed, epoch 0)
        self._column = element_word(0)  # uniform's word for stream 0, element 0

    def uniform(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 uniforms for int64 ``ids`` (same device): same id, same value."""
        ids = ids.reshape(-1)
        out = torch.empty(ids.numel(), dtype=torch.float32, device=ids.device)
        self._fill(out, lambda start, end, z: z.copy_(ids[start:end]))
        return out

    def uniform_range(
        self, first: int, n: int, device: torch.device | str, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`uniform` of the ids ``first, ..., first + n - 1`` (without making them),
        into ``out`` (float32[n]) when given."""
        out = torch.empty(n, dtype=torch.float32, device=device) if out is None else _checked_out(out, n)
        self._fill(out, lambda start, end, z: torch.arange(first + start, first + end, out=z))
        return out

    def _fill(self, out: torch.Tensor, load) -> None:  # noqa: ANN001 - load(start, end, z) writes ids into z
        n = out.numel()
        z = torch.empty(min(n, DRAW_CHUNK), dtype=torch.int64, device=out.device)
        scratch = torch.empty_like(z)
        for start in range(0, n, DRAW_CHUNK):
            end = min(n, start + DRAW_CHUNK)
            zc, sc = z[: end - start], scratch[: end - start]
            load(start, end, zc)
            mix64(zc.bitwise_xor_(self._base), fresh=True, scratch=sc)  # the sample's key
            mix64(zc.bitwise_xor_(self._column), fresh=True, scratch=sc, final_shift=False)  # its first uniform's bits
            torch.bitwise_right_shift(zc, 64 - _UNIFORM_BITS, out=sc)
            out[start:end] = sc.bitwise_and_((1 << _UNIFORM_BITS) - 1)
        out.mul_(1.0 / (1 << _UNIFORM_BITS))

    def __repr__(self) -> str:
        return f"IdDraws(seed={self.seed})"


def _checked_out(out: torch.Tensor, n: int) -> torch.Tensor:
    if out.dtype != torch.float32 or out.shape != (n,) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape ({n},), got {out.dtype} {tuple(out.shape)}")
    return out


def uniform_draws(
    generator: IdDraws | torch.Generator | None,
    reducer: Reducer,
    n: int,
    device: torch.device | str,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``n`` uniforms for the local rows of ``reducer`` (global ids ``offset ...``): per id
    from an :class:`IdDraws`, else ``torch.rand`` from ``generator`` in row order (dense
    statistics only: a sharded ledger's rows would draw differently than the dense ones);
    written into ``out`` (float32[n]) when given."""
    if isinstance(generator, IdDraws):
        return generator.uniform_range(reducer.offset, n, device, out)
    if reducer.distributed:
        raise ValueError("statistics of a sharded ledger need IdDraws (per-id draws), not a torch.Generator")
    if out is None:
        return torch.rand(n, generator=generator, device=device)
    return torch.rand(n, generator=generator, device=device, out=_checked_out(out, n))
