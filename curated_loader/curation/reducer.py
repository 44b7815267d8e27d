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
bit patterns (made order-preserving), digits of 16, 8 and 8 bits: three ``all_reduce`` calls
of a histogram (65536 int64, 512 KiB, then twice 256) give the very value ``torch.kthvalue``
returns on the concatenated values, so sharded and dense quantiles are equal (tolerance 0).
The wide first digit leaves only the values of one 1/128-wide band of one binade for the
later rounds, so the full-length passes are two (the first digits' histogram, then the keys
that share the chosen one), each in steps that make no full-length array. On dense statistics
:func:`kth_value` selects within a band bracketed by a strided sample (a few full-length
comparisons, ``torch.kthvalue`` on the band: the very value it returns on all of them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from .masking import fill_, in_steps, zero_outside_

#: Digit widths of the radix selection, most significant first (they add up to 32).
_RADIX_WIDTHS = (16, 8, 8)
#: Below this many values :func:`kth_value` calls ``torch.kthvalue`` directly.
_BAND_MIN = 1 << 16
#: Values in the strided sample that brackets :func:`kth_value`'s band.
_BAND_SAMPLE = 1 << 14


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
        return int(self.sum(torch.count_nonzero(mask)))

    def min_max(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """0-dim minimum and maximum of ``values`` (over ``mask`` when given) over all ranks."""
        if mask is None:
            lo, hi = torch.aminmax(values)
            return lo, hi
        return masked_min_max(values, mask)

    def kth_smallest(self, values: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The ``k``-th smallest (1-based) float32 value of ``values`` (over ``mask``) over all
        ranks, as a 0-dim tensor; ``k`` must lie in ``[1, count]``."""
        subset = values if mask is None else values[mask]
        return kth_value(subset.float(), k)


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
        """Every rank's ``x`` (same shape and dtype on every rank), in rank order: one
        ``all_gather``; on the CPU one ``broadcast`` per rank (see :meth:`all_gather_rows`)."""
        parts = [torch.empty_like(x) for _ in self.ranges]
        if x.device.type == "cpu":
            parts[self.rank].copy_(x)
            self._broadcast_each(parts)
        else:
            dist.all_gather(parts, x.contiguous(), group=self.process_group)
        return parts

    def _broadcast_each(self, parts: Iterable[torch.Tensor]) -> None:
        """Broadcast ``parts[r]`` from rank ``r``, for every rank, each in place: gloo's
        all-gather stages its whole output in a temporary (fresh memory on every call)."""
        for rank, part in enumerate(parts):
            dist.broadcast(part, group=self.process_group, group_src=rank)

    @property
    def rank(self) -> int:
        """This process's rank in :attr:`process_group` (the index of its range)."""
        return dist.get_rank(self.process_group)

    def all_gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Fill every rank's row of ``rows`` (one contiguous row per rank, this rank's already
        written) with that rank's row, in place: one ``all_gather`` straight into ``rows``; on
        the CPU one ``broadcast`` per rank instead (:meth:`_broadcast_each`)."""
        if rows.device.type == "cpu":
            self._broadcast_each(rows)
            return rows
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(rows.view(-1), rows[self.rank], group=self.process_group)
        return rows

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
        """Exact radix selection: per digit (:data:`_RADIX_WIDTHS`), the global histogram of
        that digit among the values that share the digits chosen so far (one ``all_reduce``)."""
        prefix, remaining, done = 0, int(k), 0
        keys: torch.Tensor | None = None  # the keys that share the digits chosen so far (after the first)
        for width in _RADIX_WIDTHS:
            shift = 32 - done - width
            if keys is None:  # the first digit of every key, step by step: no full-length keys
                histogram = sum(torch.bincount(digits, minlength=1 << width)
                                for _, digits in _first_digits(values, mask, shift, width))
            else:
                digits = _digits(keys, shift, width)
                histogram = torch.bincount(digits, minlength=1 << width)
            below = self.sum(histogram).cumsum(0)
            digit = int(torch.searchsorted(below, below.new_tensor([remaining])))  # first with below >= remaining
            remaining -= int(below[digit - 1]) if digit else 0
            prefix, done = (prefix << width) | digit, done + width
            if done < 32 and keys is None:
                keys = torch.cat([part[digits == digit] for part, digits in _first_digits(values, mask, shift, width)])
            elif done < 32:
                keys = keys[digits == digit]
        return _from_sortable_key(prefix, values.device)


def masked_min_max(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0-dim minimum and maximum of ``values`` over ``mask`` (``inf`` and ``-inf`` when it is
    empty), in steps (:func:`~curated_loader.curation.masking.in_steps`): no full-length copy."""
    lows, highs, buffer = [], [], None
    for part, inside in in_steps(values, mask):
        buffer = torch.empty_like(part) if buffer is None else buffer  # every step's copy
        outside, copy = ~inside, buffer[: part.numel()]
        lows.append(fill_(copy.copy_(part), outside, math.inf).amin())
        highs.append(fill_(copy.copy_(part), outside, -math.inf).amax())
    return torch.stack(lows).amin(), torch.stack(highs).amax()


def masked_sum_count(values: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
    """float64 ``[sum, count]`` of ``values`` over the ids where every one of ``masks`` holds
    (all ids without masks), in steps (:func:`~curated_loader.curation.masking.in_steps`): no
    full-length mask, copy or float64 array. The sum adds each step's float64 sum in order."""
    total = torch.zeros(2, dtype=torch.float64, device=values.device)
    wide = buffer = None
    for part, *inside in in_steps(values, *masks):
        if wide is None:  # every step's float64 copy (and masked copy)
            wide, buffer = torch.empty(part.numel(), dtype=torch.float64, device=part.device), torch.empty_like(part)
        if inside:
            mask = inside[0] if len(inside) == 1 else torch.logical_and(inside[0], inside[1])
            for more in inside[2:]:
                mask &= more
            part = zero_outside_(buffer[: part.numel()].copy_(part), mask)
            total[1] += torch.count_nonzero(mask)
        else:
            total[1] += part.numel()
        total[0] += wide[: part.numel()].copy_(part).sum()
    return total


def kth_value(values: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.kthvalue(values, k).values`` of a 1-D float tensor, faster on long ones: a
    strided sample of :data:`_BAND_SAMPLE` values brackets the ``k``-th smallest by a band
    ``[lo, hi]`` (six binomial standard deviations either side); the values below ``lo`` are
    counted and ``torch.kthvalue`` runs on the band's values only. If the band misses the
    ``k``-th value (a sample unlike the whole; NaN) it falls back to the full selection."""
    n = values.numel()
    if n < _BAND_MIN:
        return torch.kthvalue(values, k).values
    sample = values[:: n // _BAND_SAMPLE].sort().values
    m, margin = sample.numel(), 3 * math.isqrt(sample.numel())
    at = (k - 1) * m // n
    lo_at, hi_at = at - margin, at + margin
    inside = values <= sample[hi_at] if hi_at < m else torch.ones_like(values, dtype=torch.bool)
    if lo_at > 0:
        lower = values < sample[lo_at]
        below = int(torch.count_nonzero(lower))
        inside &= lower.logical_not_()
    else:
        below = 0
    band = values[inside]
    if below < k <= below + band.numel():
        return torch.kthvalue(band, k - below).values
    return torch.kthvalue(values, k).values


def _sortable_keys(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """int32 keys of the float32 ``values`` (over ``mask``) whose order *as unsigned 32-bit
    integers* is the order of the values: the sign bit flipped, and every bit of a negative
    value (-0.0 sorts just below +0.0). 4 bytes per value, a fresh tensor."""
    values = values.float()
    bits = (values[mask] if mask is not None else values.clone()).view(torch.int32)
    return bits.bitwise_xor_((bits >> 31).bitwise_or_(-(1 << 31)))


def _first_digits(
    values: torch.Tensor, mask: torch.Tensor | None, shift: int, width: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_sortable_keys` of ``values`` (over ``mask``) and their :func:`_digits`, step by
    step (:func:`in_steps`), each step's written into the same two buffers (read a step's
    before asking for the next): the same bits, no full-length array and no fresh temporaries."""
    buffers = None
    for step in in_steps(values) if mask is None else in_steps(values, mask):
        part = step[0].float() if mask is None else step[0][step[1]].float()
        if buffers is None:
            buffers = torch.empty(2, step[0].numel(), dtype=torch.int32, device=values.device)
        keys, digits = buffers[0, : part.numel()], buffers[1, : part.numel()]
        keys.copy_(part.view(torch.int32))
        keys.bitwise_xor_(torch.bitwise_right_shift(keys, 31, out=digits).bitwise_or_(-(1 << 31)))  # _sortable_keys
        torch.bitwise_right_shift(keys, shift, out=digits).bitwise_and_((1 << width) - 1)  # _digits
        yield keys, digits


def _digits(keys: torch.Tensor, shift: int, width: int) -> torch.Tensor:
    """Bits ``[shift, shift + width)`` of the unsigned keys of :func:`_sortable_keys`."""
    return (keys >> shift).bitwise_and_((1 << width) - 1)


def _from_sortable_key(key: int, device: torch.device | str) -> torch.Tensor:
    """The float32 value (0-dim tensor) of a key of :func:`_sortable_keys`."""
    bits = key - (1 << 31)
    if bits < 0:
        bits ^= 0x7FFFFFFF
    return torch.tensor([bits], dtype=torch.int32, device=device).view(torch.float32)[0]
