"""Per-sample augmentation strength from difficulty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ...checks import ConfigError, OneOf, Range
from ..decision import StrengthPart
from ..ledger import LedgerStats
from ..masking import fill_, in_steps
from ..schedule import LOSS_KEY, Policy

Mapping = Literal["easy_strong", "hard_strong", "constant"]


def difficulty(stats: LedgerStats, loss_key: str = "ema_loss") -> torch.Tensor:
    """``loss / (loss + median loss)`` in [0, 1): 0.5 at the median of seen samples, near 0
    for the easiest, near 1 for the hardest; 0.5 for unseen samples. If the median loss is
    0, zero-loss samples get 0.5 and the others 1."""
    loss = getattr(stats, loss_key).clamp_min(0)
    median = float(stats.quantile(loss, 0.5))
    if not median > 0:  # no seen sample, or at least half of them at zero loss
        d = (loss > 0).float().mul_(0.5).add_(0.5) if median == 0 else torch.full_like(loss, 0.5)
    else:
        d = loss
        for (part,) in in_steps(d):  # no full-length loss + median
            part.div_(part + median)
    return d.float() if stats.all_seen else fill_(d, ~stats.seen, 0.5).float()


def strength(
    stats: LedgerStats,
    epoch: int,
    generator: torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    mapping: Mapping = "easy_strong",
    min_strength: float = 0.0,
    max_strength: float = 1.0,
    suspect_strength: float = 0.0,
    loss_key: str = "ema_loss",
) -> StrengthPart:
    """Strength in ``[min_strength, max_strength]``: ``easy_strong`` maps low difficulty to
    strong augmentation, ``hard_strong`` the reverse, ``constant`` gives ``max_strength`` to
    all. Samples outside ``keep`` (suspected noisy) get ``suspect_strength``."""
    if not 0.0 <= min_strength <= max_strength <= 1.0:
        raise ValueError(f"need 0 <= min_strength <= max_strength <= 1, got {min_strength}, {max_strength}")
    span = max_strength - min_strength
    if mapping == "constant":
        s = torch.full((stats.num_samples,), max_strength, device=stats.device)
    elif mapping == "easy_strong":
        s = difficulty(stats, loss_key).mul_(-span).add_(max_strength)
    elif mapping == "hard_strong":
        s = difficulty(stats, loss_key).mul_(span).add_(min_strength)
    else:
        raise ValueError(f"unknown mapping {mapping!r}")
    if keep is not None:
        for part, kept in in_steps(s, keep):
            fill_(part, ~kept, suspect_strength)
    return StrengthPart(s.clamp_(0.0, 1.0))


@dataclass(frozen=True, kw_only=True)
class AugmentStrength(Policy):
    """Policy class of :func:`strength`."""

    mapping: Mapping = "easy_strong"
    min_strength: float = 0.0
    max_strength: float = 1.0
    suspect_strength: float = 0.0
    loss_key: str = "ema_loss"
    warmup_epochs: int = 1
    function = staticmethod(strength)
    statistics = frozenset()
    checks = {
        "mapping": OneOf(get_args(Mapping)), "min_strength": Range(0.0, 1.0),
        "max_strength": Range(0.0, 1.0), "suspect_strength": Range(0.0, 1.0), "loss_key": LOSS_KEY,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_strength > self.max_strength:
            raise ConfigError("min_strength", f"must be <= max_strength ({self.max_strength}), got {self.min_strength}")
