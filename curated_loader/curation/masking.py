"""Masked writes over long CPU tensors without a branch per element.

On CPU, ``masked_fill_`` and ``torch.where`` with a bool condition run a scalar loop that
branches on every element: over a mask with no pattern (a prune draw, noise flags) that is
about 5–6 ns per element, ten times an element-wise op. The plan writes through such masks
over every owned id, so these helpers give the very same bits through vectorized integer ops:
float32 values are selected on their bit patterns (so ``inf``, ``nan`` and ``-0.0`` pass
unchanged), bool and int8 codes by arithmetic, in steps of :data:`MASK_BLOCK` elements so that
no full-length temporary is made. On other devices, and for other dtypes, they
call ``masked_fill_`` / ``torch.where``, which are fast there.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import torch

#: Integer codes written by arithmetic (int64 is left to masked_fill_: its multiply does not vectorize).
_INT_CODES = (torch.int8, torch.uint8, torch.int16, torch.int32)


def _float_bits(value: float) -> int:
    """The int32 bit pattern of ``value`` rounded to float32."""
    return struct.unpack("<i", struct.pack("<f", value))[0]


#: Elements per step on CPU: the integer temporaries stay about 1 MiB (warm in cache, reused
#: by the allocator) instead of full-length arrays of fresh memory.
MASK_BLOCK = 1 << 18


def _branch_free(x: torch.Tensor, *others: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dim() == 1 and all(o.shape == x.shape for o in others)
            and (x.dtype in (torch.float32, torch.bool) or x.dtype in _INT_CODES))


def _blocks(*tensors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """The 1-D ``tensors`` in aligned steps of :data:`MASK_BLOCK` elements (views)."""
    for start in range(0, tensors[0].numel(), MASK_BLOCK):
        yield tuple(t[start : start + MASK_BLOCK] for t in tensors)


def in_steps(*tensors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """Aligned views of the 1-D ``tensors`` (equal lengths): steps of :data:`MASK_BLOCK`
    elements on CPU, so that element-wise work on them makes small temporaries only (reused,
    warm) instead of full-length fresh arrays; the whole tensors at once elsewhere (one kernel
    is best there)."""
    if tensors[0].device.type != "cpu" or tensors[0].numel() <= MASK_BLOCK:
        yield tensors
    else:
        yield from _blocks(*tensors)


def fill_(x: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """``x.masked_fill_(mask, value)``: ``x`` set to ``value`` where ``mask``."""
    if not _branch_free(x, mask):
        return x.masked_fill_(mask, value)
    code = _float_bits(float(value)) if x.dtype == torch.float32 else int(value)
    for xs, ms in _blocks(x, mask):
        if x.dtype == torch.bool:
            xs.logical_or_(ms) if value else xs.logical_and_(ms.logical_not())
        elif x.dtype != torch.float32:  # x - (x - value) * mask, in x's integer type
            xs.sub_(xs.sub(code).mul_(ms.to(x.dtype)))
        else:
            bits, outside = xs.view(torch.int32), ms.to(torch.int32).sub_(1)  # -1 where not mask, 0 where mask
            bits.bitwise_and_(outside)
            if code:
                bits.bitwise_or_(outside.bitwise_not_().bitwise_and_(code))
    return x


def zero_outside_(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x.masked_fill_(~mask, 0)``: ``x`` kept where ``mask``, zero (``+0.0``, ``False``) elsewhere."""
    if not _branch_free(x, mask):
        return x.masked_fill_(~mask, 0)
    for xs, ms in _blocks(x, mask):
        if x.dtype == torch.bool:
            xs.logical_and_(ms)
        elif x.dtype != torch.float32:
            xs.mul_(ms.to(x.dtype))
        else:
            xs.view(torch.int32).bitwise_and_(ms.to(torch.int32).neg_())
    return x


def select_(out: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, source, out, out=out)``: ``out`` takes ``source``'s values where ``mask``."""
    if not _branch_free(out, mask, source) or out.dtype != torch.float32 or source.dtype != torch.float32:
        return torch.where(mask, source, out, out=out)
    for outs, ms, ss in _blocks(out, mask, source):
        bits, inside = outs.view(torch.int32), ms.to(torch.int32).neg_()  # -1 where mask (xor is slower here)
        taken = ss.view(torch.int32).bitwise_and(inside)
        bits.bitwise_and_(inside.bitwise_not_()).bitwise_or_(taken)
    return out
