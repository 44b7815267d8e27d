"""InfoBatch pruning (Qin et al. 2024): skip part of the well-learned samples each epoch and
rescale the rest so the expected loss sum is unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...checks import Range
from ..decision import PrunePart
from ..draws import IdDraws, uniform_draws
from ..ledger import LedgerStats
from ..masking import fill_, in_steps
from ..reducer import masked_sum_count
from ..schedule import LOSS_KEY, Policy

#: The score InfoBatch ranks by: the latest loss, as upstream InfoBatch. On the pruning
#: benchmark's tuning seeds it saved more passes than ``ema_loss`` at the same ratio and, on
#: clean labels, beat uniform random pruning where ``ema_loss`` did not (docs/benchmarks.md).
DEFAULT_LOSS_KEY = "last_loss"


def infobatch(
    stats: LedgerStats,
    epoch: int,
    generator: IdDraws | torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    ratio: float = 0.5,
    loss_key: str = DEFAULT_LOSS_KEY,
) -> PrunePart:
    """Among seen samples in ``keep``, those with loss below the pool's mean are
    well-learned; each is skipped with probability ``ratio`` (one uniform draw per sample
    from ``generator``: per id with :class:`~curated_loader.curation.draws.IdDraws`, as the
    plan passes), and the kept well-learned ones get factor ``1 / (1 - ratio)``, so
    ``E[sum_kept factor * loss] = sum_pool loss``. Unseen samples are never pruned. The mean
    is accumulated in float64 (over all ranks of a sharded ledger: one ``all_reduce``)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must lie in [0, 1), got {ratio}")
    loss = getattr(stats, loss_key)
    pool = [m for m in (None if stats.all_seen else stats.seen, keep) if m is not None]  # the pool: where all hold
    reducer = stats.reducer
    pool_sum, pool_size = reducer.sum(masked_sum_count(loss, *pool))
    mean = pool_sum / pool_size.clamp_min(1)
    draw = uniform_draws(generator, reducer, stats.num_samples, stats.device,
                         out=torch.empty_like(loss, dtype=torch.float32))  # the draws, then the factor
    pruned = torch.empty_like(loss, dtype=torch.bool)
    for loss_part, factor, pruned_part, *pool_parts in in_steps(loss, draw, pruned, *pool):
        well_learned = loss_part < mean
        for pool_part in pool_parts:
            well_learned &= pool_part
        torch.logical_and(well_learned, factor < ratio, out=pruned_part)
        fill_(factor.fill_(1.0), well_learned & ~pruned_part, 1.0 / (1.0 - ratio))
    return PrunePart(pruned, draw)


@dataclass(frozen=True, kw_only=True)
class InfoBatchPrune(Policy):
    """Policy class of :func:`infobatch`. By default it starts on epoch 1 and is off (full
    data) for the last ``ceil(0.125 * num_epochs)`` epochs — InfoBatch's annealing."""

    ratio: float = 0.5
    loss_key: str = DEFAULT_LOSS_KEY
    warmup_epochs: int = 1
    cooldown_fraction: float = 0.125
    function = staticmethod(infobatch)
    statistics = frozenset()
    checks = {"ratio": Range(0.0, 1.0, hi_open=True), "loss_key": LOSS_KEY}
