"""When a policy acts, kept apart from what it does.

Epochs are 0-based and name the epoch a decision is *for* (the decision made at the end of
epoch ``e`` is for epoch ``e + 1``). A policy with ``warmup_epochs=w`` first acts on epoch
``w``; with ``cooldown_fraction=f`` it is off for the last ``ceil(f * num_epochs)`` epochs
(InfoBatch's annealing: full data at the end). ``f * num_epochs`` is rounded to 6 decimals
before the ceiling so that e.g. ``0.1 * 30`` counts as 3 epochs, not 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from ..checks import OneOf, Range, run_checks

#: The per-sample losses of :class:`~curated_loader.curation.ledger.LedgerStats` a policy may read.
LOSS_KEY = OneOf(("ema_loss", "mean_loss", "last_loss"))


def cooldown_start(num_epochs: int, cooldown_fraction: float) -> int:
    """First epoch of the final ``cooldown_fraction`` of ``num_epochs`` epochs."""
    if not 0.0 <= cooldown_fraction <= 1.0:
        raise ValueError(f"cooldown_fraction must lie in [0, 1], got {cooldown_fraction}")
    return num_epochs - math.ceil(round(cooldown_fraction * num_epochs, 6))


def is_active(
    epoch: int, num_epochs: int | None, warmup_epochs: int = 0, cooldown_fraction: float = 0.0
) -> bool:
    """True when a policy with this schedule acts on ``epoch``."""
    if epoch < warmup_epochs:
        return False
    if cooldown_fraction == 0.0:
        return True
    if num_epochs is None:
        raise ValueError("a cooldown_fraction > 0 needs num_epochs (pass it to the plan)")
    return epoch < cooldown_start(num_epochs, cooldown_fraction)


@dataclass(frozen=True, kw_only=True)
class Scheduled:
    """Base of every policy class: its schedule fields and :meth:`should_apply`.

    Subclasses declare the ranges of their fields in ``checks`` (name → check); they run,
    with the schedule's own, when the object is built (:class:`~curated_loader.checks.ConfigError`
    names the argument and value)."""

    warmup_epochs: int = 0
    cooldown_fraction: float = 0.0
    checks: ClassVar[Mapping[str, Callable[[str, Any], None]]] = {}

    def __post_init__(self) -> None:
        run_checks(self, {"warmup_epochs": Range(0), "cooldown_fraction": Range(0.0, 1.0), **self.checks})

    def should_apply(self, epoch: int, num_epochs: int | None = None) -> bool:
        """Whether the policy acts on ``epoch`` of a run of ``num_epochs`` epochs."""
        return is_active(epoch, num_epochs, self.warmup_epochs, self.cooldown_fraction)


@dataclass(frozen=True, kw_only=True)
class Policy(Scheduled):
    """A policy class: hyperparameters as dataclass fields, the schedule from
    :class:`Scheduled`, and the pure function it wraps as the class attribute ``function``
    with signature ``function(stats, epoch, generator, *, keep=None, **hyperparameters)``."""

    function: ClassVar[Callable[..., Any]]
    #: The per-sample statistics (:class:`~curated_loader.curation.ledger.LedgerStats` fields)
    #: the function reads besides ``seen``, ``has_logits`` and the policy's ``loss_key`` field
    #: if it has one; ``None``: not declared (see :meth:`reads`).
    statistics: ClassVar[frozenset[str] | None] = None

    def params(self) -> dict[str, Any]:
        """The hyperparameters passed to :attr:`function` (every field but the schedule)."""
        schedule = {f.name for f in fields(Scheduled)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in schedule}

    def reads(self) -> frozenset[str] | None:
        """The statistics this policy reads (:attr:`statistics` and its ``loss_key``), or
        ``None`` when undeclared. A plan lets go of a computed statistic once no later stage
        reads it; a stage that reads something undeclared recomputes it, and an undeclared
        policy keeps every statistic until the plan's end."""
        if self.statistics is None:
            return None
        loss_key = getattr(self, "loss_key", None)
        return self.statistics | ({loss_key} if loss_key else set())

    def apply(
        self, stats: Any, epoch: int, generator: torch.Generator, keep: torch.Tensor | None = None
    ) -> Any:
        """What the policy does: its function on ``stats`` restricted to ``keep``."""
        return type(self).function(stats, epoch, generator, keep=keep, **self.params())
