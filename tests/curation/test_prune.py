"""InfoBatch pruning: fraction, unbiasedness, schedule."""

from __future__ import annotations

import math

import pytest
import torch

from curated_loader.curation import CurationPlan, InfoBatchPrune, Ledger, Reason, cooldown_start
from curated_loader.curation.policies import infobatch


def _stats(n: int = 2000, seed: int = 12345):
    g = torch.Generator().manual_seed(seed)
    loss = torch.rand(n, generator=g).pow(3) * 4
    ledger = Ledger(n)
    ledger.record(torch.arange(n), loss)
    return ledger.stats(), loss


def test_prunes_the_expected_fraction_of_well_learned_samples():
    stats, loss = _stats()
    well = loss < loss.mean()
    part = infobatch(stats, 1, torch.Generator().manual_seed(0), ratio=0.3)
    assert not (part.pruned & ~well).any()
    w, pruned = int(well.sum()), int(part.pruned.sum())
    assert abs(pruned - 0.3 * w) < 4 * math.sqrt(w * 0.3 * 0.7)
    kept_well = well & ~part.pruned
    assert torch.allclose(part.factor[kept_well], torch.tensor(1 / 0.7))
    assert (part.factor[~kept_well] == 1).all()


def test_rescaled_sum_is_unbiased_over_many_epochs():
    stats, loss = _stats(n=500)
    plan = CurationPlan(prune=InfoBatchPrune(ratio=0.5, warmup_epochs=0, cooldown_fraction=0.0), seed=3)
    totals = torch.tensor([float((plan.decide(stats, e).weight * loss).sum()) for e in range(1500)])
    full = float(loss.sum())
    standard_error = float(totals.std()) / math.sqrt(len(totals))
    assert abs(float(totals.mean()) - full) < 4 * standard_error
    assert abs(float(totals.mean()) - full) / full < 0.005  # within 0.5% of the full-data sum


def test_unseen_and_flagged_samples_are_never_pruned():
    stats, _ = _stats(n=100)
    keep = torch.ones(100, dtype=torch.bool)
    keep[:30] = False
    part = infobatch(stats, 1, torch.Generator().manual_seed(1), keep=keep, ratio=0.9)
    assert not part.pruned[:30].any()
    ledger = Ledger(10)
    ledger.record(torch.arange(5), torch.zeros(5))
    assert not infobatch(ledger.stats(), 1, torch.Generator(), ratio=0.9).pruned[5:].any()


@pytest.mark.parametrize(
    ("num_epochs", "fraction", "start"),
    [(10, 0.125, 8), (8, 0.125, 7), (7, 0.125, 6), (30, 0.1, 27), (10, 0.0, 10), (3, 1.0, 0)],
)
def test_cooldown_start_rounds_up_partial_epochs(num_epochs, fraction, start):
    assert cooldown_start(num_epochs, fraction) == start


def test_plan_runs_full_data_in_the_final_epochs():
    stats, _ = _stats(n=200)
    plan = CurationPlan(
        prune=InfoBatchPrune(ratio=0.5, warmup_epochs=1, cooldown_fraction=0.25), num_epochs=10
    )
    pruned = [int((plan.decide(stats, e).reason == Reason.PRUNED).sum()) for e in range(10)]
    assert pruned[0] == 0 and all(p > 0 for p in pruned[1:7]) and pruned[7:] == [0, 0, 0]
    final = plan.decide(stats, 9)
    assert final.keep.all() and (final.weight == 1).all()


def test_cooldown_needs_num_epochs_and_ratio_is_checked():
    with pytest.raises(ValueError, match="num_epochs"):
        InfoBatchPrune().should_apply(5)
    stats, _ = _stats(n=10)
    with pytest.raises(ValueError, match="ratio"):
        infobatch(stats, 1, None, ratio=1.0)


def test_default_score_is_the_latest_loss_as_upstream_infobatch():
    """A sample that was hard last epoch but is easy now counts as well-learned by default
    (its latest loss is below the mean, its EMA is not); with ``loss_key="ema_loss"`` it does not."""
    n = 400
    ledger = Ledger(n)
    ledger.set_epoch(0)
    first = torch.full((n,), 1.0)
    first[:50] = 8.0  # hard at first ...
    ledger.record(torch.arange(n), first)
    ledger.set_epoch(1)
    second = torch.full((n,), 1.0)
    second[:50] = 0.01  # ... easy now
    ledger.record(torch.arange(n), second)
    stats = ledger.stats()
    assert float(stats.ema_loss[:50].min()) > float(stats.ema_loss.mean())  # high by EMA
    plan = CurationPlan(prune=InfoBatchPrune(ratio=0.9, warmup_epochs=0, cooldown_fraction=0.0), seed=0)
    assert InfoBatchPrune().loss_key == "last_loss"
    assert int(plan.decide(stats, 1).keep[:50].sum()) < 20  # ~90% of them skipped
    ema_plan = CurationPlan(prune=InfoBatchPrune(ratio=0.9, loss_key="ema_loss", warmup_epochs=0,
                                                 cooldown_fraction=0.0), seed=0)
    assert bool(ema_plan.decide(stats, 1).keep[:50].all())
