"""Noise filters find planted label noise in synthetic ledgers."""

from __future__ import annotations

import pytest
import torch
from curation_synthetic import build_planted

from curated_loader.curation import AUMFilter, CartographyFilter, GMMFilter, Ledger, Reason, SmallLossFilter
from curated_loader.curation.policies import aum, cartography, fit_gmm_1d, gmm, small_loss


def test_em_separates_two_populations():
    g = torch.Generator().manual_seed(1)
    clean = 0.15 + 0.05 * torch.randn(9000, generator=g)
    noisy = 0.75 + 0.10 * torch.randn(1000, generator=g)
    x = torch.cat([clean, noisy])
    truth = torch.cat([torch.zeros(9000), torch.ones(1000)]).bool()
    model = fit_gmm_1d(x)
    assert model.means[0] < model.means[1]
    assert abs(float(model.means[0]) - 0.15) < 0.02 and abs(float(model.means[1]) - 0.75) < 0.03
    accuracy = ((model.posterior_low(x) <= 0.5) == truth).float().mean()
    assert accuracy >= 0.95


def test_gmm_filter_on_recorded_losses_binned_and_exact():
    g = torch.Generator().manual_seed(2)
    n = 4000
    noisy = torch.rand(n, generator=g) < 0.2
    loss = torch.where(
        noisy, 2.5 + 0.6 * torch.randn(n, generator=g), 0.3 + 0.15 * torch.randn(n, generator=g)
    )
    ledger = Ledger(n)
    for start in range(0, n, 256):
        ids = torch.arange(start, min(start + 256, n))
        ledger.record(ids, loss[ids].clamp_min(0))
    stats = ledger.stats()
    binned = gmm(stats, 1, tau=0.5)
    exact = gmm(stats, 1, tau=0.5, bins=None)
    for part in (binned, exact):
        assert (part.flagged == noisy).float().mean() >= 0.95
        assert part.reason is Reason.FLAGGED_GMM
    assert (binned.flagged != exact.flagged).sum() <= n // 200


def test_small_loss_flags_the_planted_top_quantile(planted):
    part = small_loss(planted.ledger.stats(), 4, quantile=0.1)
    assert int(part.flagged.sum()) == 100
    assert torch.equal(part.flagged, planted.noisy)


def test_aum_flags_negative_margins(planted):
    stats = planted.ledger.stats()
    part = aum(stats, 4)
    assert torch.equal(part.flagged, planted.noisy)
    assert (part.score[planted.noisy] > 0).all() and (part.score[~planted.noisy] < 0).all()
    by_quantile = aum(stats, 4, quantile=0.05)
    assert int(by_quantile.flagged.sum()) == 50 and bool((by_quantile.flagged & ~planted.noisy).sum() == 0)


def test_cartography_flags_low_confidence_low_variability(planted):
    stats = planted.ledger.stats()
    part = cartography(stats, 4, max_confidence=0.2, max_variability=0.2)
    assert torch.equal(part.flagged, planted.noisy)


def test_cartography_spares_ambiguous_samples():
    """A sample the model flips on (high variability) is ambiguous, not mislabeled."""
    ledger = Ledger(2, num_classes=2)
    for epoch in range(6):
        confident = 4.0 if epoch % 2 else -4.0
        logits = torch.tensor([[confident, 0.0], [-4.0, 0.0]])
        ledger.record(torch.tensor([0, 1]), torch.zeros(2), logits, torch.zeros(2, dtype=torch.long))
    part = cartography(ledger.stats(), 6, max_confidence=0.6, max_variability=0.2)
    assert part.flagged.tolist() == [False, True]


@pytest.mark.parametrize(
    "policy", [SmallLossFilter(quantile=0.5), GMMFilter(), AUMFilter(), CartographyFilter()]
)
def test_unseen_samples_are_never_judged(policy):
    data = build_planted(num_samples=600, unseen=100, noise_frac=0.1, epochs=2)
    part = policy.apply(data.ledger.stats(), 3, torch.Generator())
    assert not part.flagged[-100:].any()
    assert (part.score[-100:] == 0).all()
    assert part.flagged[:-100].any()


def test_keep_restricts_judging(planted):
    keep = torch.zeros(1000, dtype=torch.bool)
    keep[:500] = True
    part = aum(planted.ledger.stats(), 4, keep=keep)
    assert torch.equal(part.flagged, planted.noisy & keep)


def test_schedules_hold_filters_back_during_warmup():
    policy = GMMFilter(warmup_epochs=3)
    assert [policy.should_apply(e) for e in range(5)] == [False, False, False, True, True]
    assert GMMFilter(tau=0.7).params()["tau"] == 0.7 and "warmup_epochs" not in GMMFilter().params()
