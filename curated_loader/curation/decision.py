"""What a curation plan produces: one :class:`Decision` per epoch, and the policy parts it is
assembled from. Every sample carries a reason code and a score so reports can explain it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any

import torch


class Reason(IntEnum):
    """Why a sample is (not) in the next epoch. Stored as int8."""

    KEPT = 0
    UNSEEN = 1  # kept: never recorded, so no policy could judge it
    FLAGGED_SMALL_LOSS = 2
    FLAGGED_GMM = 3
    FLAGGED_AUM = 4
    FLAGGED_CARTOGRAPHY = 5
    PRUNED = 6

    @property
    def flagged(self) -> bool:
        return self.name.startswith("FLAGGED_")


@dataclass(frozen=True)
class NoisePart:
    """A noise filter's verdict: ``flagged`` bool[N] (likely mislabeled), ``score`` float32[N]
    (higher = more suspicious), the reason code it stands for, and optional scalar ``info``
    about how it decided (logged as ``curation/<name>``)."""

    flagged: torch.Tensor
    score: torch.Tensor
    reason: Reason
    info: dict[str, float] | None = None


@dataclass(frozen=True)
class PrunePart:
    """A pruning draw: ``pruned`` bool[N] (skipped this epoch) and ``factor`` float32[N]
    (loss-weight rescale of the kept samples, 1 elsewhere)."""

    pruned: torch.Tensor
    factor: torch.Tensor


@dataclass(frozen=True)
class WeightPart:
    """Per-sample weights float32[N] with mean 1 over the samples they were computed for;
    ``as_counts`` asks the plan to deliver them as integer resampling counts."""

    weight: torch.Tensor
    as_counts: bool = False


@dataclass(frozen=True)
class StrengthPart:
    """Per-sample augmentation strength float32[N] in [0, 1]."""

    strength: torch.Tensor


@dataclass(frozen=True)
class Decision:
    """The curation decision for one epoch (tensors of length N on the stats' device).

    * ``keep`` — the sample is streamed this epoch (not flagged, not pruned).
    * ``weight`` — loss weight; 0 for samples not kept. Without pruning it has mean 1 over kept
      samples. With pruning it has mean 1 over the *non-flagged* samples in expectation over the
      draw (``sum(weight)`` ≈ number of non-flagged samples): the 1/(1-r) rescale of pruning is
      what keeps ``sum(weight * loss)`` an unbiased estimate of the full non-flagged sum.
    * ``counts`` — with resampling delivery, int32 repeat counts per sample (expectation =
      the weight); ``weight`` then holds the same counts as float.
    * ``strength`` — augmentation strength in [0, 1].
    * ``reason`` — int8 :class:`Reason` code; ``score`` — the suspicion score of the noise
      filter that flagged the sample, else of the first active noise filter, else the EMA loss.
    * ``info`` — scalars the policies report about how they decided (e.g. ``filter_guard``).
    """

    keep: torch.Tensor
    weight: torch.Tensor
    strength: torch.Tensor
    reason: torch.Tensor
    score: torch.Tensor
    epoch: int
    counts: torch.Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.keep.shape[0])

    @classmethod
    def keep_all(cls, num_samples: int, epoch: int = 0, device: torch.device | str = "cpu") -> Decision:
        """The neutral decision: everything kept, weight 1, strength 0, reason UNSEEN."""
        return cls(
            keep=torch.ones(num_samples, dtype=torch.bool, device=device),
            weight=torch.ones(num_samples, dtype=torch.float32, device=device),
            strength=torch.zeros(num_samples, dtype=torch.float32, device=device),
            reason=torch.full((num_samples,), int(Reason.UNSEEN), dtype=torch.int8, device=device),
            score=torch.zeros(num_samples, dtype=torch.float32, device=device),
            epoch=epoch,
        )

    def summary(self) -> dict[str, int]:
        """Counts per outcome: ``kept``, ``flagged``, ``pruned``, ``unseen`` and one entry per
        reason code (lower-case name). One host sync."""
        per_reason = torch.bincount(self.reason.long(), minlength=len(Reason)).tolist()
        out = {r.name.lower(): int(per_reason[r]) for r in Reason}
        out["kept"] = out["kept"] + out["unseen"]
        out["flagged"] = sum(int(per_reason[r]) for r in Reason if r.flagged)
        return out

    def publish_to(self, snapshot: Any) -> None:
        """Write keep/weight/strength into a ``CurationSnapshot`` as version ``epoch``."""
        snapshot.publish(self.keep, self.weight, self.strength, version=self.epoch)

    def to(self, device: torch.device | str) -> Decision:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return Decision(**moved)

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Decision:
        """Inverse of :meth:`state_dict`; raises ``KeyError`` naming missing entries."""
        required = [f.name for f in fields(cls) if f.name not in ("counts", "info")]
        missing = [k for k in required if k not in state]
        if missing:
            raise KeyError(f"decision state is missing {', '.join(missing)}")
        return cls(**{k: state[k] for k in required}, counts=state.get("counts"), info=dict(state.get("info", {})))
