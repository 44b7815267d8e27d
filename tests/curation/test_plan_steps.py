"""The plan's element-wise work in steps (``masking.in_steps``, reused buffers, in place)
gives the very bits of the work done on whole tensors."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
from curation_synthetic import build_planted

from curated_loader.curation import (
    AugmentStrength,
    AUMFilter,
    CurationPlan,
    Decision,
    GMMFilter,
    InfoBatchPrune,
    LossMarginFilter,
    Reweight,
    SmallLossFilter,
)
from curated_loader.curation import decision as decision_module
from curated_loader.curation.draws import IdDraws, uniform_draws
from curated_loader.curation.policies import GMM1D, normalize_clipped
from curated_loader.curation.reducer import Reducer, masked_min_max, masked_sum_count
from curated_loader.data.snapshot import PackedDecision

BLOCK = "curated_loader.curation.masking.MASK_BLOCK"


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def _assert_same_bits(a: Decision, b: Decision) -> None:
    for f in fields(Decision):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(_bits(x), _bits(y)), f.name
        else:
            assert x == y, f.name


def _plans() -> dict[str, CurationPlan]:
    prune, augment = InfoBatchPrune(warmup_epochs=0), AugmentStrength(warmup_epochs=0, suspect_strength=0.25)
    return {
        "loss mode": CurationPlan(
            noise_filter=[LossMarginFilter(warmup_epochs=0), GMMFilter(warmup_epochs=0), SmallLossFilter(warmup_epochs=0)],
            prune=prune, reweight=Reweight(class_balance=True, warmup_epochs=0), augment=augment, num_epochs=10),
        "margin mode": CurationPlan(  # never separated enough: the margin rule, asking for p(clean)
            noise_filter=[LossMarginFilter(warmup_epochs=0, min_separation=1e9, margin_rule="agree"),
                          GMMFilter(warmup_epochs=0, loss_key="ema_loss"), AUMFilter(warmup_epochs=0)],
            prune=prune, reweight=Reweight(warmup_epochs=0, w_max=1.5), augment=augment, num_epochs=10),
    }


@pytest.mark.parametrize("name", list(_plans()))
def test_a_plan_in_steps_decides_the_bits_of_one_step(name, monkeypatch):
    stats = build_planted(num_samples=3001, unseen=40, seed=3).ledger.stats()
    plan = _plans()[name]
    whole = plan.decide(stats, 2)
    assert whole.summary()["flagged"] > 0 and whole.summary()["pruned"] > 0  # every stage acted
    monkeypatch.setattr(BLOCK, 256)  # 12 steps, the last short
    _assert_same_bits(plan.decide(stats, 2), whole)


def test_posterior_in_place_equals_posterior(monkeypatch):
    g = torch.Generator().manual_seed(1)
    model = GMM1D(torch.tensor([0.2, 0.7], dtype=torch.float64), torch.tensor([0.01, 0.04], dtype=torch.float64),
                  torch.tensor([0.8, 0.2], dtype=torch.float64), 1)
    x = torch.rand(5_003, generator=g)
    expected = model.posterior_low(x)
    monkeypatch.setattr(BLOCK, 512)
    got = x.clone()
    assert model.posterior_low_(got) is not None and torch.equal(_bits(got), _bits(expected))


def test_masked_min_max_in_steps(monkeypatch):
    g = torch.Generator().manual_seed(2)
    values, mask = torch.randn(5_003, generator=g), torch.rand(5_003, generator=g) < 0.3
    monkeypatch.setattr(BLOCK, 512)
    lo, hi = masked_min_max(values, mask)
    assert (float(lo), float(hi)) == (float(values[mask].min()), float(values[mask].max()))
    assert Reducer(5_003).min_max(values, mask) == (lo, hi)
    empty = masked_min_max(values, torch.zeros_like(mask))
    assert (float(empty[0]), float(empty[1])) == (float("inf"), float("-inf"))


def test_normalize_clipped_leaves_its_input_alone():
    g = torch.Generator().manual_seed(4)
    raw, members = torch.rand(2_000, generator=g) * 10, torch.rand(2_000, generator=g) < 0.7
    before = raw.clone()
    weight = normalize_clipped(raw, members, 0.2, 1.5)
    assert torch.equal(raw, before)
    assert float(weight[members].mean()) == pytest.approx(1.0, abs=1e-5) and float(weight.max()) <= 1.5
    assert not bool(weight[~members].any())


def test_draws_into_a_given_tensor():
    reducer = Reducer(1_000)
    out = torch.empty(1_000)
    assert uniform_draws(IdDraws(5), reducer, 1_000, "cpu", out=out) is out
    assert torch.equal(out, uniform_draws(IdDraws(5), reducer, 1_000, "cpu"))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(uniform_draws(g1, reducer, 1_000, "cpu", out=out), uniform_draws(g2, reducer, 1_000, "cpu"))
    with pytest.raises(ValueError, match=r"shape \(1000,\)"):
        uniform_draws(IdDraws(5), reducer, 1_000, "cpu", out=torch.empty(999))


@pytest.mark.parametrize("masks", [0, 1, 3])
def test_masked_sum_count_in_steps(masks, monkeypatch):
    g = torch.Generator().manual_seed(6)
    values = torch.randn(5_003, generator=g).exp_()
    given = [torch.rand(5_003, generator=g) < 0.8 for _ in range(masks)]
    inside = torch.ones(5_003, dtype=torch.bool)
    for mask in given:
        inside &= mask
    pooled = torch.where(inside, values, 0.0)
    one_step = masked_sum_count(values, *given)  # one step: the bits of the whole tensor's float64 sum
    assert torch.equal(one_step, torch.stack([pooled.sum(dtype=torch.float64), inside.sum().double()]))
    monkeypatch.setattr(BLOCK, 512)  # 10 steps, the last short: the steps' sums added in order
    stepped = masked_sum_count(values, *given)
    steps = [pooled[s : s + 512].sum(dtype=torch.float64) for s in range(0, 5_003, 512)]
    assert float(stepped[0]) == float(sum(steps, torch.zeros((), dtype=torch.float64)))
    assert float(stepped[1]) == int(inside.sum()) and float(stepped[0]) == pytest.approx(float(one_step[0]), rel=1e-12)


def test_kept_sums_are_the_sums_of_the_kept_values(monkeypatch):
    """The gather's kept sums (kept positions and values in reused buffers) equal those of
    the kept values picked by a bool index, chunk by chunk."""
    monkeypatch.setattr(decision_module, "GATHER_CHUNK", 64)
    g = torch.Generator().manual_seed(7)
    n = 1_001
    keep, weight, strength = torch.rand(n, generator=g) < 0.6, torch.rand(n, generator=g) * 4, torch.rand(n, generator=g)
    keep[128:192] = False  # a chunk with nothing kept
    size = 16 * math.ceil(n / 16)
    rows = torch.zeros(1, size * 25 // 8, dtype=torch.uint8)
    decision_module._pack_into(rows[0], keep, weight, strength, size)
    packed = PackedDecision(rows, ((0, n),))
    sums, top = decision_module._kept_sums(packed, 0)
    kept, w, s = (decision_module._decoded(packed, name, n) for name in ("keep", "weight", "strength"))
    expected, expected_top = torch.zeros(4, dtype=torch.float64), -math.inf
    for start in range(0, n, 64):
        inside = kept[start : start + 64]
        kw, ks = w[start : start + 64][inside].double(), s[start : start + 64][inside].double()
        if kw.numel():
            expected += torch.stack([kw.new_tensor(kw.numel()), kw.sum(), kw.square().sum(), ks.sum()])
            expected_top = max(expected_top, float(kw.max()))
    assert torch.equal(sums, expected) and float(top) == expected_top and int(sums[0]) == int(keep.sum())
