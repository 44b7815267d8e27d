"""How well a curation decision finds the truly mislabeled samples (pure functions).

Only for evaluation: the true noise mask is known when the noise was injected (e.g.
``write_noisy_mnist1d`` writes ``noise_mask.npy``); training never reads it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_f1_score, binary_precision, binary_recall

from ..curation.decision import Reason

__all__ = ["DETECTION_KEYS", "detection_metrics", "flagged_of", "load_noise_mask"]

#: The keys :func:`detection_metrics` returns.
DETECTION_KEYS = ("precision", "recall", "f1", "auroc", "flagged", "noisy", "noisy_kept_frac")

_FLAGGED_CODES = tuple(int(r) for r in Reason if r.flagged)


def flagged_of(reason: torch.Tensor) -> torch.Tensor:
    """bool[N]: samples a noise filter flagged (any ``FLAGGED_*`` reason code)."""
    codes = torch.tensor(_FLAGGED_CODES, dtype=reason.dtype, device=reason.device)
    return torch.isin(reason, codes)


def _as_bool(value: Any, name: str, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(tensor.shape)}")
    return tensor.to(device=device).bool()


@torch.no_grad()
def detection_metrics(
    flagged: torch.Tensor | np.ndarray,
    noise_mask: torch.Tensor | np.ndarray,
    score: torch.Tensor | np.ndarray | None = None,
    valid: torch.Tensor | np.ndarray | None = None,
    keep: torch.Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """Flagged samples vs the true noise mask, with torchmetrics.

    Args:
        flagged: bool[N], the samples judged mislabeled (positives predicted).
        noise_mask: bool[N], the samples truly mislabeled (positives).
        score: float[N], higher = more suspicious; gives ``auroc`` (threshold-free). Only
            its order matters: it is min-max scaled before torchmetrics sees it, so large
            raw scores are not squashed by the logit detection of ``binary_auroc``.
        valid: bool[N], the samples to judge (e.g. those seen at least once); default all.
        keep: bool[N], the samples streamed next epoch; gives ``noisy_kept_frac``.

    Returns ``precision``, ``recall``, ``f1`` (0 when nothing is flagged), ``auroc`` (nan
    without a score or when the mask holds a single class), the counts ``flagged`` and
    ``noisy``, and ``noisy_kept_frac`` (the fraction of truly noisy samples among the kept
    ones; nan without ``keep``).
    """
    device = flagged.device if isinstance(flagged, torch.Tensor) else torch.device("cpu")
    pred = _as_bool(flagged, "flagged", device)
    target = _as_bool(noise_mask, "noise_mask", device)
    if pred.shape != target.shape:
        raise ValueError(f"flagged has {pred.numel()} entries, the noise mask {target.numel()}")
    select = None if valid is None else _as_bool(valid, "valid", device)
    if select is not None:
        pred, target = pred[select], target[select]
    t = target.long()
    out = {
        "precision": float(binary_precision(pred.long(), t)),
        "recall": float(binary_recall(pred.long(), t)),
        "f1": float(binary_f1_score(pred.long(), t)),
        "auroc": math.nan,
        "flagged": float(pred.sum()),
        "noisy": float(target.sum()),
        "noisy_kept_frac": math.nan,
    }
    if score is not None and 0 < int(target.sum()) < target.numel():
        s = torch.as_tensor(np.asarray(score) if not isinstance(score, torch.Tensor) else score).to(device).double()
        if select is not None:
            s = s[select]
        s = torch.nan_to_num(s, nan=float(s[~s.isnan()].min()) if (~s.isnan()).any() else 0.0)
        lo, hi = s.min(), s.max()
        s = (s - lo) / (hi - lo) if hi > lo else torch.zeros_like(s)
        out["auroc"] = float(binary_auroc(s, t))
    if keep is not None:
        kept = _as_bool(keep, "keep", device)
        full_target = _as_bool(noise_mask, "noise_mask", device)
        if select is not None:
            kept, full_target = kept[select], full_target[select]
        n_kept = int(kept.sum())
        out["noisy_kept_frac"] = float((kept & full_target).sum()) / n_kept if n_kept else math.nan
    return out


def load_noise_mask(path: str, num_samples: int | None = None) -> torch.Tensor:
    """Read a ``.npy`` noise mask as bool[N]; checks its length against ``num_samples``."""
    mask = torch.from_numpy(np.load(path).astype(bool).reshape(-1))
    if num_samples is not None and mask.numel() != num_samples:
        raise ValueError(f"noise mask {path} has {mask.numel()} entries, the training shards hold {num_samples} samples")
    return mask
