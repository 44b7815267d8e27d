"""Masked writes over long CPU tensors without a branch per element.

On CPU, ``masked_fill_`` and ``torch.where`` with a bool condition run a scalar loop that
branches on every element: over a mask with no pattern (a prune draw, noise flags) that is
about 5–6 ns per element, ten times an element-wise op. The plan writes through such masks
over every owned id, so these helpers give the very same bits through vectorized integer ops:
float32 values are selected on their bit patterns (so ``inf``, ``nan`` and ``-0.0`` pass
unchanged), bool and int8 codes by arithmetic. On other devices, and for other dtypes, they
call ``masked_fill_`` / ``torch.where``, which are fast there.
"""

from __future__ import annotations

import struct

import torch

#: Integer codes written by arithmetic (int64 is left to masked_fill_: its multiply does not vectorize).
_INT_CODES = (torch.int8, torch.uint8, torch.int16, torch.int32)


def _float_bits(value: float) -> int:
    """The int32 bit pattern of ``value`` rounded to float32."""
    return struct.unpack("<i", struct.pack("<f", value))[0]


def _branch_free(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and (x.dtype in (torch.float32, torch.bool) or x.dtype in _INT_CODES)


def fill_(x: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """``x.masked_fill_(mask, value)``: ``x`` (1-D, contiguous) set to ``value`` where ``mask``."""
    if not _branch_free(x) or x.shape != mask.shape:
        return x.masked_fill_(mask, value)
    if x.dtype == torch.bool:
        return x.logical_or_(mask) if value else x.logical_and_(mask.logical_not())
    if x.dtype != torch.float32:  # x - (x - value) * mask, in x's integer type
        return x.sub_(x.sub(int(value)).mul_(mask.to(x.dtype)))
    bits, code = x.view(torch.int32), _float_bits(float(value))
    outside = mask.to(torch.int32).sub_(1)  # -1 (all bits) where not mask, 0 where mask
    bits.bitwise_and_(outside)
    if code:
        bits.bitwise_or_(outside.bitwise_not_().bitwise_and_(code))
    return x


def zero_outside_(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x.masked_fill_(~mask, 0)``: ``x`` kept where ``mask``, zero (``+0.0``, ``False``) elsewhere."""
    if not _branch_free(x) or x.shape != mask.shape:
        return x.masked_fill_(~mask, 0)
    if x.dtype == torch.bool:
        return x.logical_and_(mask)
    if x.dtype != torch.float32:
        return x.mul_(mask.to(x.dtype))
    return x.view(torch.int32).bitwise_and_(mask.to(torch.int32).neg_()).view(torch.float32)


def select_(out: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, source, out, out=out)``: ``out`` takes ``source``'s values where ``mask``."""
    if out.device.type != "cpu" or out.dtype != torch.float32 or source.dtype != torch.float32 \
            or not out.shape == source.shape == mask.shape:
        return torch.where(mask, source, out, out=out)
    bits = out.view(torch.int32)
    change = source.view(torch.int32).bitwise_xor(bits).bitwise_and_(mask.to(torch.int32).neg_())
    bits.bitwise_xor_(change)
    return out
