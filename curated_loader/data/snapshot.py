"""The curation snapshot: per-sample decisions shared between the trainer and loader workers.

The main process owns the snapshot and is its only writer; loader workers read it from the
start of each epoch's iterator. The arrays live in shared memory created before any worker
starts, so persistent workers see every new version without being restarted.

Compact storage, 3.125 bytes per sample: ``keep`` as a bitmask (1 bit), ``weight`` as float16
(2 bytes; relative rounding error at most 2**-11 ≈ 0.05% for weights from 6.1e-5 to 65504,
absolute at most 3e-8 below, so the mean weight over kept samples stays 1 to within 0.05%),
``strength`` as a uint8 code ``round(255 · s)`` (absolute error at most 1/510).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

_STRENGTH_LEVELS = 255
_WEIGHT_MAX = float(torch.finfo(torch.float16).max)
#: float16 bit patterns (as int16) of the largest finite weight and of -0.0.
_HALF_MAX_BITS, _HALF_NEGATIVE_ZERO_BITS = 0x7BFF, -0x8000
#: float16 weights checked per step of :meth:`CurationSnapshot.publish_packed`.
_CHECK_STEP = 1 << 20


#: Bytes per sample of :func:`pack_decision` (and of the snapshot's shared arrays).
PACKED_BYTES_PER_SAMPLE = 1 / 8 + 2 + 1
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)  # np.packbits' bit order (big-endian)


def pack_decision(keep: torch.Tensor, weight: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """The snapshot's compact encoding of ``n`` decisions (``n`` a multiple of 16, so the
    float16 part starts 2-byte aligned) as one uint8
    tensor on their device: the keep bitmask (``n / 8`` bytes), float16 weights (``2 n``),
    uint8 strength codes ``round(255 s)`` (``n``). A weight above the float16 range becomes inf."""
    n = keep.numel()
    if n % 16:
        raise ValueError(f"pack_decision needs a multiple of 16 samples, got {n}")
    bits = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=keep.device)
    mask = keep.to(torch.uint8).view(-1, 8).mul_(bits).sum(1, dtype=torch.uint8)
    half = weight.to(torch.float16).view(torch.uint8)
    codes = torch.round(strength.float() * _STRENGTH_LEVELS).to(torch.uint8)
    return torch.cat([mask, half, codes])


def packed_sections(size: int, start: int, count: int) -> tuple[slice, slice, slice]:
    """Where samples ``[start, start + count)`` lie in :func:`pack_decision`'s layout of
    ``size`` samples: keep bytes, float16 weight bytes, strength codes; ``start`` and
    ``count`` multiples of 8 (of 16 for all but the last samples)."""
    half, codes = size // 8, size // 8 + 2 * size
    return (slice(start // 8, (start + count) // 8), slice(half + 2 * start, half + 2 * (start + count)),
            slice(codes + start, codes + start + count))


@dataclass(frozen=True)
class PackedDecision:
    """The decisions of all N samples in :func:`pack_decision`'s layout, one row per rank, as
    an all-gather of the ranks' slices delivers them: row ``r`` holds ids ``ranges[r]`` as the
    first ``hi - lo`` of ``size`` samples (``size`` a multiple of 16; the rest packed as
    keep 0, weight 0, strength 0). :meth:`CurationSnapshot.publish_packed` copies it in."""

    rows: torch.Tensor  # uint8 [len(ranges), size * 25 // 8]
    ranges: tuple[tuple[int, int], ...]

    @property
    def size(self) -> int:
        """Samples per row (padding included)."""
        return int(self.rows.shape[1]) * 8 // 25

    def columns(self, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row ``rank``'s keep bytes (``ceil(count / 8)``), float16 weights and uint8 strength
        codes (``count`` each), views of :attr:`rows`."""
        lo, hi = self.ranges[rank]
        count = hi - lo
        mask, half, codes = (self.rows[rank, s] for s in packed_sections(self.size, 0, self.size))
        return mask[: (count + 7) // 8], half.view(torch.float16)[:count], codes[:count]


def unpack_decision(packed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_decision` for a buffer of ``size`` samples (a multiple of 16),
    keeping the first ``n``: ``keep`` (bool), ``weight`` and ``strength`` (float32, decoded
    as the snapshot decodes them)."""
    size = packed.numel() * 8 // 25  # 25 bytes per 8 samples
    bits = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=packed.device)
    keep = (packed[: size // 8, None] & bits).ne(0).view(-1)[:n]
    weight = packed[size // 8 : size // 8 + 2 * size].view(torch.float16)[:n].float()
    strength = packed[size // 8 + 2 * size :][:n].float() / _STRENGTH_LEVELS
    return keep, weight, strength


def _check_half_weights(half: torch.Tensor, first_id: int) -> None:
    """Raise unless every float16 weight is finite and non-negative (-0.0 allowed, as ``-0.0 <
    0`` is false), checked on the bit patterns :data:`_CHECK_STEP` at a time; the error names the
    first bad sample's id (``first_id`` is that of ``half[0]``) and value."""
    bits = half.view(torch.int16)
    for start in range(0, bits.numel(), _CHECK_STEP):
        step = bits[start : start + _CHECK_STEP]
        low, high = (int(v) for v in torch.aminmax(step))
        if low >= 0 and high <= _HALF_MAX_BITS:
            continue  # the common case: no sign bit, no inf/NaN exponent
        bad = (step > _HALF_MAX_BITS) | ((step < 0) & (step != _HALF_NEGATIVE_ZERO_BITS))
        if bool(bad.any()):
            at = int(bad.nonzero()[0])
            raise ValueError(f"snapshot.weight must be finite and non-negative, got "
                             f"{float(half[start + at])} for sample {first_id + start + at}")


class ScaledCodes:
    """Read-only uint8 codes seen as floats ``code / levels``: ``codes[i]`` gives a float,
    array indexing or ``np.asarray`` a float32 array. Wraps the shared array without copying."""

    def __init__(self, codes: np.ndarray, levels: int) -> None:
        self.codes = codes
        self.levels = np.float32(levels)

    def __getitem__(self, index: Any) -> Any:
        value = np.asarray(self.codes[index]).astype(np.float32) / self.levels  # float32, as the tensor decode
        return float(value) if value.ndim == 0 else value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.codes.astype(np.float32) / self.levels
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape


#: Ids unpacked per step where a whole-range count is taken (:attr:`SnapshotView.kept_count`).
_COUNT_STEP = 1 << 23


@dataclass(frozen=True)
class SnapshotView:
    """What a worker reads for one epoch: the keep bitmask (``bits``, uint8[ceil(N/8)], a private
    copy: 1 bit per sample), ``weight`` (float16[N]) and ``strength`` (floats from uint8
    codes), the last two read in place from shared memory. Safe because the main process
    publishes only between epochs, never while an epoch's iterator runs.

    ``keep_range(lo, hi)`` unpacks the keep flags of ids ``[lo, hi)`` only; :attr:`keep`
    unpacks all N (1 byte per sample, made when first read)."""

    bits: np.ndarray  # uint8[ceil(N / 8)], most significant bit first
    weight: np.ndarray  # float16[N], shared
    strength: ScaledCodes  # floats in [0, 1] from uint8[N], shared
    version: int

    @property
    def num_samples(self) -> int:
        return int(self.weight.shape[0])

    def keep_range(self, lo: int, hi: int) -> np.ndarray:
        """bool[hi - lo]: whether ids ``lo .. hi - 1`` are kept."""
        if not 0 <= lo <= hi <= self.num_samples:
            raise IndexError(f"id range [{lo}, {hi}) outside [0, {self.num_samples})")
        first = lo // 8
        flags = np.unpackbits(self.bits[first : (hi + 7) // 8])  # 0/1 bytes
        return flags[lo - 8 * first : hi - 8 * first].view(bool)

    @cached_property
    def keep(self) -> np.ndarray:
        """bool[N] (unpacked when first read, then kept)."""
        return self.keep_range(0, self.num_samples)

    @property
    def kept_count(self) -> int:
        n = self.num_samples
        return sum(int(np.count_nonzero(self.keep_range(lo, min(n, lo + _COUNT_STEP)))) for lo in range(0, n, _COUNT_STEP))


class CurationSnapshot:
    """Shared-memory decisions for N samples: ``keep`` (bitmask), ``weight`` (float16, mean 1
    over kept samples), ``strength`` (uint8 code of [0, 1]) and an integer ``version``.

    Create it in the main process before the DataLoader starts its workers; pass it to the
    dataset (it pickles as shared-memory handles). Call :meth:`publish` between epochs and
    :meth:`view` at the start of an epoch's iterator. The ``keep``, ``weight`` and
    ``strength`` properties decode copies (bool, float32, float32) for the main process.
    """

    def __init__(self, num_samples: int) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self._n = int(num_samples)
        # empty, then filled in shared memory by reset(): no full-length array made on the heap
        self._bits = torch.empty((num_samples + 7) // 8, dtype=torch.uint8).share_memory_()
        self._weight = torch.empty(num_samples, dtype=torch.float16).share_memory_()
        self._strength = torch.empty(num_samples, dtype=torch.uint8).share_memory_()
        self._version = torch.full((1,), -1, dtype=torch.int64).share_memory_()
        self.reset()

    @property
    def num_samples(self) -> int:
        return self._n

    @property
    def version(self) -> int:
        """The epoch the current decision was made for (-1: the initial keep-all state)."""
        return int(self._version[0])

    @property
    def bytes_per_sample(self) -> float:
        """Shared memory per sample (the bitmask, float16 weights, uint8 strengths)."""
        arrays = (self._bits, self._weight, self._strength)
        return sum(a.numel() * a.element_size() for a in arrays) / max(self._n, 1)

    @property
    def keep(self) -> torch.Tensor:
        """bool[N] (a decoded copy)."""
        return torch.from_numpy(np.unpackbits(self._bits.numpy(), count=self._n).astype(bool))

    @property
    def weight(self) -> torch.Tensor:
        """float32[N] (a decoded copy)."""
        return self._weight.float()

    @property
    def strength(self) -> torch.Tensor:
        """float32[N] in [0, 1] (a decoded copy)."""
        return self._strength.float() / _STRENGTH_LEVELS

    def publish(
        self,
        keep: torch.Tensor | np.ndarray,
        weight: torch.Tensor | np.ndarray | None = None,
        strength: torch.Tensor | np.ndarray | None = None,
        version: int = 0,
    ) -> None:
        """Write a new decision in place (main process only, between epochs).

        Tensors may live on any device; they are encoded into the shared host arrays.
        ``weight`` defaults to 1 and ``strength`` to 0 for every sample.
        """
        n = self._n
        keep_t = torch.as_tensor(keep).to("cpu", torch.bool)
        weight_t = torch.ones(n) if weight is None else torch.as_tensor(weight).to("cpu", torch.float32)
        strength_t = torch.zeros(n) if strength is None else torch.as_tensor(strength).to("cpu", torch.float32)
        for name, value in (("keep", keep_t), ("weight", weight_t), ("strength", strength_t)):
            if value.shape != (n,):
                raise ValueError(f"snapshot.{name} must have shape ({n},), got {tuple(value.shape)}")
        if not bool(torch.isfinite(weight_t).all()) or bool((weight_t < 0).any()):
            raise ValueError("snapshot.weight must be finite and non-negative")
        if bool((weight_t > _WEIGHT_MAX).any()):
            raise ValueError(f"snapshot.weight must be at most {_WEIGHT_MAX:g} (stored as float16), got {float(weight_t.max()):g}")
        if bool((strength_t < 0).any()) or bool((strength_t > 1).any()):
            raise ValueError("snapshot.strength must lie in [0, 1]")
        self._bits.copy_(torch.from_numpy(np.packbits(keep_t.numpy())))
        self._weight.copy_(weight_t)
        self._strength.copy_(torch.round(strength_t * _STRENGTH_LEVELS))
        self._version.fill_(int(version))

    def publish_packed(self, packed: PackedDecision, version: int = 0) -> None:
        """Write a decision already in the compact format (main process only, between
        epochs): the rows' bytes are copied into the shared arrays as they are, no decode.
        Every weight is checked first on its float16 bit pattern (finite, non-negative; the
        format bounds it by the float16 maximum; strength codes are in range by construction),
        so a bad row changes nothing. Ranks' ranges need not start at multiples of 8: the
        keep bits of such a row are shifted into place."""
        self._check_ranges(packed)
        for rank, (lo, _) in enumerate(packed.ranges):
            _check_half_weights(packed.columns(rank)[1], lo)
        for rank, (lo, hi) in enumerate(packed.ranges):
            mask, half, codes = packed.columns(rank)
            self._weight[lo:hi].copy_(half)
            self._strength[lo:hi].copy_(codes)
            self._write_bits(lo, hi, mask)
        self._version.fill_(int(version))

    def _check_ranges(self, packed: PackedDecision) -> None:
        """Raise unless ``packed``'s ranges tile ``[0, N)`` in order and fit its rows."""
        ends = [0] + [hi for _, hi in packed.ranges]
        if [lo for lo, _ in packed.ranges] != ends[:-1] or ends[-1] != self._n:
            raise ValueError(f"packed decision ranges {list(packed.ranges)} do not tile [0, {self._n})")
        widest = max(hi - lo for lo, hi in packed.ranges)
        if packed.rows.dtype != torch.uint8 or packed.rows.shape[0] != len(packed.ranges) or widest > packed.size:
            raise ValueError(f"packed decision rows {tuple(packed.rows.shape)} ({packed.rows.dtype}) do not hold "
                             f"{len(packed.ranges)} ranges of up to {widest} samples")

    def _write_bits(self, lo: int, hi: int, mask: torch.Tensor) -> None:
        """Copy the keep bits of ids ``[lo, hi)`` (``mask``: bit 0 of its first byte is id
        ``lo``) into the bitmask, leaving the bits of ids below ``lo`` as they are and clearing
        those from ``hi`` to the end of the last byte (the next range ORs its own in)."""
        if hi == lo:
            return
        shift = lo % 8
        dest = self._bits[lo // 8 : (hi + 7) // 8]
        if shift == 0:
            dest.copy_(mask)
        else:  # each byte takes the low bits of its predecessor: uint8 shifts drop what overflows
            src = mask.to("cpu")
            earlier = int(dest[0]) & (0xFF << (8 - shift)) & 0xFF  # ids below lo (the previous range)
            dest[: src.numel()] = src >> shift
            dest[1 : src.numel()] |= src[:-1] << (8 - shift)
            if dest.numel() > src.numel():
                dest[-1] = src[-1] << (8 - shift)
            dest[0] |= earlier
        if hi % 8:
            dest[-1] &= (0xFF << (8 - hi % 8)) & 0xFF

    def reset(self) -> None:
        """Back to keep-all, weight 1, strength 0, version -1 (written in place)."""
        self._bits.fill_(0xFF)
        if self._n % 8:  # the last byte's bits past N stay clear, as publish leaves them
            self._bits[-1] = (0xFF << (8 - self._n % 8)) & 0xFF
        self._weight.fill_(1.0)
        self._strength.zero_()
        self._version.fill_(-1)

    def view(self) -> SnapshotView:
        """What a worker reads for one epoch (taken once at iterator start)."""
        return SnapshotView(
            bits=self._bits.numpy().copy(),
            weight=self._weight.numpy(),
            strength=ScaledCodes(self._strength.numpy(), _STRENGTH_LEVELS),
            version=self.version,
        )

    def state_dict(self) -> dict:
        return {"keep": self.keep, "weight": self.weight, "strength": self.strength, "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        self.publish(state["keep"], state["weight"], state["strength"], int(state["version"]))
