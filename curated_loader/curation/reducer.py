"""Global quantities for policies, over one process (dense statistics) or over the ranks of a
sharded ledger (each rank holding the statistics of the ids it owns).

A policy reads its statistics' :attr:`~curated_loader.curation.ledger.LedgerStats.reducer` and
passes it each *local* partial result (a sum, a count, an extreme, a histogram); it gets the
global one back. On dense statistics the :class:`Reducer` is the identity and adds no tensor
op; on a sharded ledger's :class:`~curated_loader.curation.sharded.OwnedStats` the
:class:`GroupReducer` runs one small collective per call (``all_reduce`` of a few numbers, or
of a histogram of ``bins`` counts). Every rank must make the same calls in the same order,
so a branch that guards a call must depend on global quantities only.

Quantiles are exact: :meth:`GroupReducer.kth_smallest` is a radix selection over the float32
bit patterns (made order-preserving), 8 bits per round: four ``all_reduce`` calls of a
256-bin histogram (2 KiB each) give the very value ``torch.kthvalue`` returns on the
concatenated values, so sharded and dense quantiles are equal (tolerance 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

_RADIX_BITS = 8
_RADIX = 1 << _RADIX_BITS


class Reducer:
    """The identity reducer of statistics that cover all ``num_samples`` ids."""

    distributed = False

    def __init__(self, num_samples: int, offset: int = 0) -> None:
        self.total = int(num_samples)  #: N, the number of ids of the whole ledger
        self.offset = int(offset)  #: the global id of local row 0

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over ranks (element-wise)."""
        return x

    def max(self, x: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``x`` over ranks."""
        return x

    def count(self, mask: torch.Tensor) -> int:
        """The number of true entries of ``mask`` over all ranks (one host sync)."""
        return int(self.sum(mask.sum()))

    def min_max(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """0-dim minimum and maximum of ``values`` (over ``mask`` when given) over all ranks."""
        if mask is None:
            lo, hi = torch.aminmax(values)
            return lo, hi
        return values.masked_fill(~mask, math.inf).amin(), values.masked_fill(~mask, -math.inf).amax()

    def kth_smallest(self, values: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The ``k``-th smallest (1-based) float32 value of ``values`` (over ``mask``) over all
        ranks, as a 0-dim tensor; ``k`` must lie in ``[1, count]``."""
        subset = values if mask is None else values[mask]
        return torch.kthvalue(subset.float(), k).values

    def ids(self, n: int, device: torch.device | str) -> torch.Tensor:
        """int64 global ids of the ``n`` local rows."""
        return torch.arange(self.offset, self.offset + n, dtype=torch.int64, device=device)


class GroupReducer(Reducer):
    """Collectives over ``process_group`` (any backend: tensors stay on their device, as NCCL
    needs). Local row 0 is global id ``offset``; ``num_samples`` is the ledger's N;
    ``ranges[r]`` is the id range ``[lo, hi)`` rank ``r`` owns."""

    distributed = True

    def __init__(
        self, num_samples: int, offset: int, ranges: Sequence[tuple[int, int]], process_group: Any = None
    ) -> None:
        super().__init__(num_samples, offset)
        self.ranges = [(int(lo), int(hi)) for lo, hi in ranges]
        self.process_group = process_group

    def all_gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``x`` (same shape and dtype on every rank), in rank order: one ``all_gather``."""
        parts = [torch.empty_like(x) for _ in self.ranges]
        dist.all_gather(parts, x.contiguous(), group=self.process_group)
        return parts

    def _reduce(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        out = x.detach().clone().contiguous()
        dist.all_reduce(out, op=op, group=self.process_group)
        return out

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return self._reduce(x, dist.ReduceOp.SUM)

    def max(self, x: torch.Tensor) -> torch.Tensor:
        return self._reduce(x, dist.ReduceOp.MAX)

    def min_max(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``all_reduce(MAX)`` of ``(-min, max)``; a rank with no entries adds ``(-inf, -inf)``."""
        if values.numel():
            lo, hi = super().min_max(values, mask)
            local = torch.stack([lo.neg(), hi]).to(values.dtype)
        else:
            local = torch.full((2,), -math.inf, dtype=values.dtype, device=values.device)
        both = self.max(local)
        return both[0].neg(), both[1]

    def kth_smallest(self, values: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact radix selection: per round of 8 bits, the global histogram of the next digit
        among the values that share the digits chosen so far (one ``all_reduce`` of 256 int64)."""
        keys = _sortable_keys(values, mask)
        prefix, remaining = 0, int(k)
        for shift in range(32 - _RADIX_BITS, -1, -_RADIX_BITS):
            if shift != 32 - _RADIX_BITS:  # keep the keys that share the digits chosen so far
                keys = keys[_digits(keys, shift + _RADIX_BITS, 32 - shift - _RADIX_BITS) == prefix]
            counts = self.sum(torch.bincount(_digits(keys, shift, _RADIX_BITS), minlength=_RADIX)).tolist()
            digit = 0
            while remaining > counts[digit]:
                remaining -= counts[digit]
                digit += 1
            prefix = (prefix << _RADIX_BITS) | digit
        return _from_sortable_key(prefix, values.device)


def _sortable_keys(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """int32 keys of the float32 ``values`` (over ``mask``) whose order *as unsigned 32-bit
    integers* is the order of the values: the sign bit flipped, and every bit of a negative
    value (-0.0 sorts just below +0.0). 4 bytes per value, a fresh tensor."""
    values = values.float()
    bits = (values[mask] if mask is not None else values.clone()).view(torch.int32)
    return bits.bitwise_xor_((bits >> 31).bitwise_or_(-(1 << 31)))


def _digits(keys: torch.Tensor, shift: int, width: int) -> torch.Tensor:
    """Bits ``[shift, shift + width)`` of the unsigned keys of :func:`_sortable_keys`."""
    return (keys >> shift).bitwise_and_((1 << width) - 1)


def _from_sortable_key(key: int, device: torch.device | str) -> torch.Tensor:
    """The float32 value (0-dim tensor) of a key of :func:`_sortable_keys`."""
    bits = key - (1 << 31)
    if bits < 0:
        bits ^= 0x7FFFFFFF
    return torch.tensor([bits], dtype=torch.int32, device=device).view(torch.float32)[0]
