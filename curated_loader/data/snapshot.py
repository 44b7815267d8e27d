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
from typing import Any

import numpy as np
import torch

from ..host_memory import reusing_freed_host_memory

_STRENGTH_LEVELS = 255
_WEIGHT_MAX = float(torch.finfo(torch.float16).max)


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


@dataclass(frozen=True)
class SnapshotView:
    """What a worker reads for one epoch: ``keep`` (bool[N], unpacked from the bitmask: the
    one private array), ``weight`` (float16[N]) and ``strength`` (floats from uint8 codes),
    the last two read in place from shared memory. Safe because the main process publishes
    only between epochs, never while an epoch's iterator runs."""

    keep: np.ndarray  # bool[N]
    weight: np.ndarray  # float16[N], shared
    strength: ScaledCodes  # floats in [0, 1] from uint8[N], shared
    version: int

    @property
    def num_samples(self) -> int:
        return int(self.keep.shape[0])

    @property
    def kept_count(self) -> int:
        return int(self.keep.sum())


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
        self._bits = torch.zeros((num_samples + 7) // 8, dtype=torch.uint8).share_memory_()
        self._weight = torch.zeros(num_samples, dtype=torch.float16).share_memory_()
        self._strength = torch.zeros(num_samples, dtype=torch.uint8).share_memory_()
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

    @reusing_freed_host_memory
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

    def reset(self) -> None:
        """Back to keep-all, weight 1, strength 0, version -1."""
        self.publish(torch.ones(self._n, dtype=torch.bool), version=-1)

    def view(self) -> SnapshotView:
        """What a worker reads for one epoch (taken once at iterator start)."""
        return SnapshotView(
            keep=np.unpackbits(self._bits.numpy(), count=self._n).astype(bool),
            weight=self._weight.numpy(),
            strength=ScaledCodes(self._strength.numpy(), _STRENGTH_LEVELS),
            version=self.version,
        )

    def state_dict(self) -> dict:
        return {"keep": self.keep, "weight": self.weight, "strength": self.strength, "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        self.publish(state["keep"], state["weight"], state["strength"], int(state["version"]))
