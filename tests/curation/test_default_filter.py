"""The default noise filter (loss mixture when bimodal, else margin; guarded) and probes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from curation_synthetic import build_planted

from curated_loader.curation import CurationPlan, Ledger, LossMarginFilter, Reason
from curated_loader.curation.policies import loss_margin
from curated_loader.lightning.callback import epoch_metrics


def _f1(flagged: torch.Tensor, truth: torch.Tensor) -> float:
    tp = float((flagged & truth).sum())
    return 2 * tp / max(float(flagged.sum() + truth.sum()), 1.0)


def _ledger(n: int, boost_label: torch.Tensor, boost_other: torch.Tensor, other: torch.Tensor,
            labels: torch.Tensor, epochs: int = 4, seed: int = 0) -> Ledger:
    """Logits N(0, 1) plus ``boost_label`` on the label and ``boost_other`` on class ``other``."""
    g = torch.Generator().manual_seed(seed)
    ledger = Ledger(n, num_classes=10)
    ids = torch.arange(n)
    for epoch in range(epochs):
        ledger.set_epoch(epoch)
        logits = torch.randn(n, 10, generator=g)
        logits[ids, labels] += boost_label
        logits[ids, other] += boost_other
        ledger.record(ids, F.cross_entropy(logits, labels, reduction="none"), logits, labels)
    return ledger


def test_bimodal_loss_is_split_by_the_mixture():
    planted = build_planted(num_samples=2000, noise_frac=0.3)
    part = loss_margin(planted.ledger.stats(), 5)
    assert part.info["filter_mode"] == 0.0 and part.info["filter_guard"] == 0.0
    assert part.info["filter_separation"] >= 2.0
    assert part.reason == Reason.FLAGGED_GMM
    assert _f1(part.flagged, planted.noisy) > 0.95


def test_overlapping_loss_falls_back_to_the_margin():
    """Pair-flip-like: the noisy samples' labels are half learned, so the loss is not
    bimodal, but another class still scores higher than the given label on average."""
    g = torch.Generator().manual_seed(1)
    n = 3000
    labels = torch.randint(5, (n,), generator=g)
    noisy = torch.rand(n, generator=g) < 0.4
    other = (labels + 1) % 5
    label_boost = torch.where(noisy, 1.2, 1.8) + 0.6 * torch.rand(n, generator=g)
    other_boost = torch.where(noisy, 1.8, 0.0) + 0.6 * torch.rand(n, generator=g)
    stats = _ledger(n, label_boost, other_boost, other, labels).stats()
    part = loss_margin(stats, 5)
    assert part.info["filter_mode"] == 1.0, part.info
    assert part.info["filter_separation"] < 2.0
    assert not (part.flagged & (stats.aum >= 0)).any()  # only negative margins
    assert _f1(part.flagged, noisy) > 0.8
    off = loss_margin(stats, 5, margin_fallback=False)  # the pure guard: no bimodality, no flags
    assert off.info["filter_mode"] == 2.0 and not off.flagged.any()


def test_negative_margin_rule_flags_every_margin_below_the_threshold():
    """``margin_rule="negative"``: in margin mode the flags are exactly AUM < -threshold; the
    "agree" rule keeps only the part of that set the loss mixture also calls noisy."""
    g = torch.Generator().manual_seed(3)
    n = 3000
    labels = torch.randint(5, (n,), generator=g)
    noisy = torch.rand(n, generator=g) < 0.4
    label_boost = torch.where(noisy, 1.2, 1.8) + 0.6 * torch.rand(n, generator=g)
    other_boost = torch.where(noisy, 1.8, 0.0) + 0.6 * torch.rand(n, generator=g)
    stats = _ledger(n, label_boost, other_boost, (labels + 1) % 5, labels).stats()
    for threshold in (0.0, 0.25):
        negative = loss_margin(stats, 5, margin_rule="negative", margin_threshold=threshold)
        agree = loss_margin(stats, 5, margin_rule="agree", margin_threshold=threshold)
        assert negative.info["filter_mode"] == 1.0 and negative.info["filter_guard"] == 0.0
        assert torch.equal(negative.flagged, stats.aum < -threshold)
        assert not (agree.flagged & ~negative.flagged).any()
    assert int(loss_margin(stats, 5, margin_rule="negative", margin_threshold=0.25).flagged.sum()) < int(
        loss_margin(stats, 5, margin_rule="negative", margin_threshold=0.0).flagged.sum())
    with pytest.raises(ValueError, match="margin_rule"):
        loss_margin(stats, 5, margin_rule="both")


def test_guard_refuses_to_flag_most_of_the_data():
    """An untrained model: every class scores alike, most margins are negative."""
    g = torch.Generator().manual_seed(2)
    n = 2000
    labels = torch.randint(5, (n,), generator=g)
    stats = _ledger(n, torch.zeros(n), torch.zeros(n), labels, labels).stats()
    part = loss_margin(stats, 5)
    assert part.info["filter_guard"] == 1.0
    assert not part.flagged.any()
    decision = CurationPlan(noise_filter=LossMarginFilter(warmup_epochs=0)).decide(stats, 5)
    metrics = epoch_metrics(decision)
    assert metrics["curation/filter_guard"] == 1.0 and metrics["curation/flagged"] == 0.0


def test_probes_stream_a_bounded_share_of_flagged_samples_with_weight_zero():
    planted = build_planted(num_samples=2000, noise_frac=0.3)
    stats = planted.ledger.stats()
    plan = CurationPlan(noise_filter=LossMarginFilter(warmup_epochs=0), probe_every=2, probe_fraction=0.05)
    decision = plan.decide(stats, 4)
    flagged = torch.tensor([Reason(int(r)).flagged for r in decision.reason])
    probes = flagged & decision.keep
    assert 0 < int(probes.sum()) <= 0.05 * 2000 and decision.info["probed"] == float(probes.sum())
    assert (decision.weight[probes] == 0).all()  # scored, not trained
    assert (decision.weight[decision.keep & ~flagged] > 0).all()
    assert "probed" not in plan.decide(stats, 5).info  # only every probe_every-th epoch
    assert not (plan.decide(stats, 5).keep & flagged).any()
    again = plan.decide(stats, 4)
    assert torch.equal(again.keep, decision.keep)  # seeded: the same on every rank
