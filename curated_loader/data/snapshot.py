"""The curation snapshot: per-sample decisions shared between the trainer and loader workers.

The main process owns the snapshot and is its only writer; loader workers copy it once at
the start of each epoch's iterator. The arrays live in shared memory created before any
worker starts, so persistent workers see every new version without being restarted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SnapshotView:
    """A worker's private, consistent copy of the snapshot for one epoch."""

    keep: np.ndarray  # bool[N]
    weight: np.ndarray  # float32[N]
    strength: np.ndarray  # float32[N]
    version: int

    @property
    def num_samples(self) -> int:
        return int(self.keep.shape[0])

    @property
    def kept_count(self) -> int:
        return int(self.keep.sum())


class CurationSnapshot:
    """Shared-memory arrays of length N: ``keep`` (bool), ``weight`` (float32, mean 1 over
    kept samples), ``strength`` (float32 in [0, 1]) and an integer ``version``.

    Create it in the main process before the DataLoader starts its workers; pass it to the
    dataset (it pickles as shared-memory handles). Call :meth:`publish` between epochs and
    :meth:`view` at the start of an epoch's iterator.
    """

    def __init__(self, num_samples: int) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.keep = torch.ones(num_samples, dtype=torch.bool).share_memory_()
        self.weight = torch.ones(num_samples, dtype=torch.float32).share_memory_()
        self.strength = torch.zeros(num_samples, dtype=torch.float32).share_memory_()
        self._version = torch.full((1,), -1, dtype=torch.int64).share_memory_()

    @property
    def num_samples(self) -> int:
        return int(self.keep.shape[0])

    @property
    def version(self) -> int:
        """The epoch the current decision was made for (-1: the initial keep-all state)."""
        return int(self._version[0])

    def publish(
        self,
        keep: torch.Tensor | np.ndarray,
        weight: torch.Tensor | np.ndarray | None = None,
        strength: torch.Tensor | np.ndarray | None = None,
        version: int = 0,
    ) -> None:
        """Write a new decision in place (main process only, between epochs).

        Tensors may live on any device; they are copied to the shared host arrays.
        ``weight`` defaults to 1 and ``strength`` to 0 for every sample.
        """
        n = self.num_samples
        keep_t = torch.as_tensor(keep).to("cpu", torch.bool)
        weight_t = torch.ones(n) if weight is None else torch.as_tensor(weight).to("cpu", torch.float32)
        strength_t = torch.zeros(n) if strength is None else torch.as_tensor(strength).to("cpu", torch.float32)
        for name, value in (("keep", keep_t), ("weight", weight_t), ("strength", strength_t)):
            if value.shape != (n,):
                raise ValueError(f"snapshot.{name} must have shape ({n},), got {tuple(value.shape)}")
        if not bool(torch.isfinite(weight_t).all()) or bool((weight_t < 0).any()):
            raise ValueError("snapshot.weight must be finite and non-negative")
        if bool((strength_t < 0).any()) or bool((strength_t > 1).any()):
            raise ValueError("snapshot.strength must lie in [0, 1]")
        self.keep.copy_(keep_t)
        self.weight.copy_(weight_t)
        self.strength.copy_(strength_t)
        self._version.fill_(int(version))

    def reset(self) -> None:
        """Back to keep-all, weight 1, strength 0, version -1."""
        self.keep.fill_(True)
        self.weight.fill_(1.0)
        self.strength.fill_(0.0)
        self._version.fill_(-1)

    def view(self) -> SnapshotView:
        """A private copy, taken once per epoch at iterator start."""
        return SnapshotView(
            keep=self.keep.numpy().copy(),
            weight=self.weight.numpy().copy(),
            strength=self.strength.numpy().copy(),
            version=self.version,
        )

    def state_dict(self) -> dict:
        return {
            "keep": self.keep.clone(),
            "weight": self.weight.clone(),
            "strength": self.strength.clone(),
            "version": self.version,
        }

    def load_state_dict(self, state: dict) -> None:
        self.publish(state["keep"], state["weight"], state["strength"], int(state["version"]))
