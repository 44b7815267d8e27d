"""How per-sample losses and curation weights become the loss that is minimized.

Two reductions of a batch's per-sample losses ``ℓ`` with curation weights ``w``:

* ``"normalized"`` — ``Σ w·ℓ / Σ w``, a weighted mean. Its scale does not depend on the
  weights, so an optimizer's step size never changes because the curation changed the
  weights (pruning's ``1/(1-r)`` rescale, reweighting, flagged samples dropped).
* ``"mean"`` — ``mean(w·ℓ) = Σ w·ℓ / B`` over the ``B`` trained samples of the batch (those
  with ``w > 0``; weight-0 samples are probes that are scored, not trained), as upstream
  InfoBatch minimizes it. With plain SGD the summed gradient of an epoch is then an unbiased
  estimate of the full-data one. With Adam it is not neutral: during pruning the kept
  samples carry weights > 1, the loss and its gradients are larger, and Adam's second-moment
  estimate grows with them; when pruning stops (annealing) the weights fall back to 1 and the
  steps shrink (to ~0.3× in the MNIST-1D benchmark) — an accidental learning-rate decay over
  the last epochs. Compare such runs against a baseline with the same decay.
"""

from __future__ import annotations

from typing import Literal

import torch

Reduction = Literal["normalized", "mean"]
REDUCTIONS: tuple[str, ...] = ("normalized", "mean")
#: The default everywhere (``CurationPlan.reduction``, ``curated_loss``, the benchmarks):
#: the step size must not depend on what the curation decided.
DEFAULT_REDUCTION: Reduction = "normalized"


def check_reduction(reduction: str) -> str:
    """``reduction`` if it is one of :data:`REDUCTIONS`, else a ``ValueError`` naming it."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")
    return reduction


def weighted_loss(loss: torch.Tensor, weights: torch.Tensor, reduction: str = DEFAULT_REDUCTION) -> torch.Tensor:
    """Reduce per-sample ``loss`` [B] with curation ``weights`` [B] (see the module docstring).

    No host sync: an all-zero weight vector gives 0 under both reductions. The weights are
    normalized first (they carry no gradient), so the loss enters one dot product: one
    autograd node forward and backward."""
    check_reduction(reduction)
    weights = weights.to(device=loss.device, dtype=loss.dtype)
    if reduction == "mean":
        scaled = weights / (weights > 0).sum().clamp_min(1).to(loss.dtype)
    else:
        scaled = weights / weights.sum().clamp_min(torch.finfo(loss.dtype).tiny)
    return torch.dot(loss, scaled)
