"""Reweighting: mean 1 over members, clip, class balance, resampling counts."""

from __future__ import annotations

import pytest
import torch

from curated_loader.curation import CurationPlan, Ledger, Reweight
from curated_loader.curation.policies import (
    balance_classes,
    normalize_clipped,
    sample_weights,
    stochastic_round,
)


def _stats(n: int = 3000, labels: torch.Tensor | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    loss = (-2.0 * torch.rand(n, generator=g).log()) ** 2  # exponential, squared: heavy right tail
    ledger = Ledger(n)
    ledger.record(torch.arange(n), loss, targets=labels)
    return ledger.stats()


def test_mean_one_over_kept_and_clip_respected():
    stats = _stats()
    keep = torch.rand(stats.num_samples, generator=torch.Generator().manual_seed(5)) < 0.8
    part = sample_weights(stats, 1, keep=keep, alpha=1.0, w_min=0.5, w_max=2.0)
    w = part.weight
    assert (w[~keep] == 0).all()
    assert float(w[keep].min()) >= 0.5 and float(w[keep].max()) <= 2.0
    assert (w[keep] == 2.0).sum() > 50 and (w[keep] == 0.5).sum() > 50  # the clip binds on both sides
    assert abs(float(w[keep].double().mean()) - 1.0) < 1e-5


def test_weights_grow_with_loss():
    stats = _stats(n=500)
    w = sample_weights(stats, 1, alpha=0.5, w_min=0.0, w_max=float("inf")).weight
    order = torch.argsort(stats.ema_loss)
    assert (w[order].diff() >= -1e-6).all()
    assert abs(float(w.mean()) - 1.0) < 1e-5


def test_normalize_clipped_handles_extreme_raw_weights():
    raw = torch.tensor([1e-6] * 90 + [1e6] * 10)
    w = normalize_clipped(raw, torch.ones(100, dtype=torch.bool), 0.1, 3.0)
    assert torch.allclose(w[90:], torch.tensor(3.0)) and abs(float(w.mean()) - 1) < 1e-5
    with pytest.raises(ValueError):
        normalize_clipped(raw, torch.ones(100, dtype=torch.bool), 1.5, 3.0)


def test_class_balance_equalizes_class_mass():
    labels = torch.cat(
        [torch.zeros(700), torch.ones(200), torch.full((90,), 2), torch.full((10,), -1)]
    ).long()
    stats = _stats(n=1000, labels=labels)
    for alpha in (0.0, 0.7):
        w = sample_weights(stats, 1, alpha=alpha, w_min=0.0, w_max=float("inf"), class_balance=True).weight
        mass = torch.stack([w[labels == c].sum() for c in range(3)])
        assert torch.allclose(mass, mass.mean().expand(3), rtol=1e-4), mass
        assert abs(float(w.mean()) - 1) < 1e-5
    uniform = sample_weights(stats, 1, alpha=0.0, w_min=0.0, w_max=float("inf"), class_balance=True).weight
    assert torch.allclose(uniform[:700], uniform[0]) and float(uniform[900]) > float(uniform[0])


def test_balance_classes_ignores_non_members_and_unknown_labels():
    labels = torch.tensor([0, 0, 0, 1, -1, 1])
    members = torch.tensor([True, True, True, True, True, False])
    out = balance_classes(torch.ones(6), labels, members)
    assert torch.allclose(out, torch.tensor([4 / 6, 4 / 6, 4 / 6, 2.0, 1.0, 1.0]))


def test_balance_classes_in_steps_equals_one_step(monkeypatch):
    g = torch.Generator().manual_seed(5)
    n = 10_007
    raw, labels = torch.rand(n, generator=g) + 0.1, torch.randint(-1, 7, (n,), generator=g)
    members = torch.rand(n, generator=g) > 0.2
    whole = balance_classes(raw, labels, members)
    monkeypatch.setattr("curated_loader.curation.policies.reweight.CLASS_BLOCK", 1000)  # 11 steps, the last short
    stepped = balance_classes(raw, labels, members)
    assert torch.allclose(stepped, whole, rtol=1e-6, atol=0)
    outside = ~members | (labels < 0)
    assert torch.equal(stepped[outside], raw[outside])  # left as they are


def test_stochastic_round_has_expectation_weight():
    weight = torch.tensor([0.0, 0.25, 1.0, 1.5, 2.75, 4.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([stochastic_round(weight, g) for _ in range(20000)]).float()
    assert draws.dtype == torch.float32 and torch.equal(draws.floor(), draws)
    assert torch.allclose(draws.mean(0), weight, atol=0.02)
    assert ((draws - weight.floor()) >= 0).all() and ((draws - weight.floor()) <= 1).all()


def test_plan_delivers_counts_when_asked():
    stats = _stats(n=2000)
    plan = CurationPlan(reweight=Reweight(as_counts=True, warmup_epochs=0), seed=1)
    decision = plan.decide(stats, 2)
    assert decision.counts is not None and decision.counts.dtype == torch.int32
    assert torch.equal(decision.weight, decision.counts.float())
    expected = CurationPlan(reweight=Reweight(warmup_epochs=0)).decide(stats, 2).weight
    assert abs(float(decision.weight.sum()) - float(expected.sum())) < 4 * (2000 * 0.25) ** 0.5
