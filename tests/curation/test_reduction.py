"""The loss reduction: normalized (Σw·ℓ/Σw) vs mean (mean(w·ℓ)), and why it matters with Adam."""

from __future__ import annotations

import pytest
import torch

from curated_loader.curation import DEFAULT_REDUCTION, CurationPlan, weighted_loss


def test_the_two_reductions_are_the_documented_formulas():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = torch.tensor([2.0, 2.0, 1.0, 0.0])  # the last one is a weight-0 probe
    assert weighted_loss(loss, w, "normalized").item() == pytest.approx((2 + 4 + 3) / 5)
    assert weighted_loss(loss, w, "mean").item() == pytest.approx((2 + 4 + 3) / 3)
    assert weighted_loss(loss, torch.zeros(4), "normalized").item() == 0.0
    assert weighted_loss(loss, torch.zeros(4), "mean").item() == 0.0
    ones = torch.ones(4)  # with unit weights both are the plain mean
    assert weighted_loss(loss, ones, "normalized").item() == weighted_loss(loss, ones, "mean").item() == 2.5


def test_unknown_reduction_is_refused_by_name():
    with pytest.raises(ValueError, match="'sum'"):
        weighted_loss(torch.ones(2), torch.ones(2), "sum")
    with pytest.raises(ValueError, match="'avg'"):
        CurationPlan(reduction="avg")
    assert CurationPlan().reduction == DEFAULT_REDUCTION == "normalized"


def _adam_step_sizes(reduction: str, weight_phases: list[tuple[float, int]]) -> list[float]:
    """Adam on a least-squares problem whose per-sample weights change between phases;
    returns each step's parameter change (norm)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64)
    w_param = torch.zeros(8, requires_grad=True)
    opt = torch.optim.Adam([w_param], lr=1e-2)
    sizes = []
    for weight, steps in weight_phases:
        for _ in range(steps):
            before = w_param.detach().clone()
            loss = (x @ w_param - y).square()
            opt.zero_grad()
            weighted_loss(loss, torch.full((64,), weight), reduction).backward()
            opt.step()
            sizes.append(float((w_param.detach() - before).norm()))
    return sizes


def test_mean_reduction_with_weights_above_one_shrinks_later_adam_steps():
    """The accidental learning-rate decay: under "mean", weights of 3 during "pruning" inflate
    Adam's second moment, so the steps after they return to 1 (once the first moment has caught up) are smaller than under
    "normalized", whose steps do not depend on the weights at all."""
    phases = [(3.0, 50), (1.0, 30)]
    mean = _adam_step_sizes("mean", phases)
    normalized = _adam_step_sizes("normalized", phases)
    reference = _adam_step_sizes("normalized", [(1.0, 80)])
    assert normalized == pytest.approx(reference, rel=1e-5)  # scale-free: the weights change nothing
    after, before = sum(mean[55:]), sum(normalized[55:])
    assert after < 0.75 * before, (after, before)
