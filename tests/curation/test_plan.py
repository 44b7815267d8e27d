"""The plan: composition order, reasons, determinism, publishing."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
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
    Reason,
    Reweight,
    SmallLossFilter,
    derive_seed,
)
from curated_loader.curation.schedule import Policy
from curated_loader.data.snapshot import CurationSnapshot


def _full_plan(seed: int = 0) -> CurationPlan:
    return CurationPlan(
        noise_filter=[AUMFilter(warmup_epochs=1), GMMFilter(warmup_epochs=1)],
        prune=InfoBatchPrune(ratio=0.5, warmup_epochs=1),
        reweight=Reweight(warmup_epochs=1),
        augment=AugmentStrength(warmup_epochs=1),
        seed=seed,
        num_epochs=20,
    )


def _assert_same(a: Decision, b: Decision) -> None:
    for f in fields(Decision):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y, f.name


def test_equal_inputs_give_bit_identical_decisions(planted):
    stats = planted.ledger.stats()
    rng_before = torch.get_rng_state()
    _assert_same(_full_plan().decide(stats, 5), _full_plan().decide(stats, 5))
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched


def test_epochs_and_seeds_change_the_prune_draw(planted):
    stats = planted.ledger.stats()
    a, b, c = (
        _full_plan().decide(stats, 5),
        _full_plan().decide(stats, 6),
        _full_plan(seed=1).decide(stats, 5),
    )
    assert not torch.equal(a.keep, b.keep) and not torch.equal(a.keep, c.keep)
    assert len({derive_seed(s, e, k) for s in range(3) for e in range(50) for k in range(5)}) == 750


def test_composition_reasons_and_weights(planted):
    decision = _full_plan().decide(planted.ledger.stats(), 5)
    flagged = (decision.reason == Reason.FLAGGED_AUM) | (decision.reason == Reason.FLAGGED_GMM)
    pruned = decision.reason == Reason.PRUNED
    assert torch.equal(decision.reason == Reason.FLAGGED_AUM, planted.noisy)  # AUM comes first
    assert torch.equal(decision.keep, ~flagged & ~pruned)
    assert (decision.weight[~decision.keep] == 0).all() and (decision.weight[decision.keep] > 0).all()
    assert (decision.strength[flagged] == 0).all() and (decision.strength <= 1).all()
    # mean 1 over the non-flagged samples, up to the prune draw
    assert abs(float(decision.weight.sum()) / int((~flagged).sum()) - 1) < 0.05
    summary = decision.summary()
    assert summary["kept"] == int(decision.keep.sum())
    assert summary["flagged"] == int(flagged.sum()) and summary["pruned"] == int(pruned.sum())
    assert decision.score.dtype == torch.float32 and decision.reason.dtype == torch.int8


def test_without_pruning_weights_have_mean_one_over_kept(planted):
    plan = CurationPlan(
        noise_filter=SmallLossFilter(quantile=0.1, warmup_epochs=0), reweight=Reweight(warmup_epochs=0)
    )
    decision = plan.decide(planted.ledger, 3)
    assert abs(float(decision.weight[decision.keep].double().mean()) - 1) < 1e-5


def test_warmup_gives_the_neutral_decision_and_unseen_samples_are_kept():
    data = build_planted(num_samples=300, unseen=50, epochs=2)
    first = _full_plan().decide(data.ledger, 0)
    assert first.keep.all() and (first.weight == 1).all() and (first.strength == 0).all()
    later = _full_plan().decide(data.ledger, 4)
    assert later.keep[-50:].all() and (later.reason[-50:] == Reason.UNSEEN).all()


def test_labels_argument_overrides_recorded_labels(planted):
    plan = CurationPlan(
        reweight=Reweight(alpha=0.0, w_min=0.0, w_max=100.0, class_balance=True, warmup_epochs=0)
    )
    labels = torch.zeros(1000, dtype=torch.long)
    labels[:100] = 1
    stats = planted.ledger.stats()
    w = plan.decide(stats, 2, labels=labels).weight
    assert torch.isclose(w[:100].sum(), w[100:].sum())
    assert stats.computed() == {}  # the override shares the caller's statistics: none computed and left held


def test_publish_and_state_round_trip(planted):
    decision = _full_plan().decide(planted.ledger.stats(), 7)
    snapshot = CurationSnapshot(decision.num_samples)
    decision.publish_to(snapshot)
    view = snapshot.view()
    assert view.version == 7 and view.kept_count == int(decision.keep.sum())
    # float16 in shared memory: each weight to 2**-11 relative, so their mean moves by < 0.05%
    shared = torch.from_numpy(view.weight.astype(np.float32))
    assert torch.allclose(shared, decision.weight, rtol=2**-11, atol=3e-8)
    kept = decision.keep
    assert abs(float(shared[kept].double().mean() / decision.weight[kept].double().mean()) - 1) < 5e-4
    assert snapshot.bytes_per_sample <= 4
    _assert_same(Decision.from_state_dict(decision.state_dict()), decision)
    neutral = Decision.keep_all(5, epoch=0)
    assert neutral.summary()["kept"] == 5 and neutral.summary()["unseen"] == 5
    plan = _full_plan(seed=4)
    other = _full_plan()
    other.load_state_dict(plan.state_dict())
    assert other.seed == 4 and other.num_epochs == 20
    other.load_state_dict({})  # an older checkpoint without plan state
    assert other.seed == 4


def _score_is_the_statistic(stats, epoch, generator=None, *, keep=None):
    """A filter whose score is a statistic itself (no copy): the plan must not write into it."""
    from curated_loader.curation import NoisePart

    return NoisePart(torch.zeros_like(stats.seen), stats.ema_loss, Reason.FLAGGED_SMALL_LOSS)


def test_a_score_that_is_a_statistic_is_copied_before_the_plan_writes_into_it(planted):
    from dataclasses import dataclass

    from curated_loader.curation import Policy

    @dataclass(frozen=True, kw_only=True)
    class StatisticScore(Policy):
        warmup_epochs: int = 0
        function = staticmethod(_score_is_the_statistic)

    stats = planted.ledger.stats()
    before = stats.ema_loss.clone()
    plan = CurationPlan(noise_filter=[StatisticScore(), AUMFilter(warmup_epochs=0)], seed=0)
    decision = plan.decide(stats, 3)
    flagged_by_aum = decision.reason == int(Reason.FLAGGED_AUM)
    assert bool(flagged_by_aum.any())  # the second filter's scores were written into the first's
    assert torch.equal(stats.ema_loss, before)
    assert torch.equal(decision.score[flagged_by_aum], stats.aum.neg()[flagged_by_aum])


#: What each stage of a plan found computed when it started (stage name -> statistic names).
_HELD_AT: dict[str, set[str]] = {}


def _recording(policy_class: type, name: str, declared: bool = True) -> type:
    """A subclass of ``policy_class`` that records the statistics held when it applies; with
    ``declared=False`` it does not say what it reads (the plan then lets nothing go)."""

    class Recording(policy_class):
        def apply(self, stats, epoch, generator, keep=None):
            _HELD_AT[name] = set(stats.computed())
            return super().apply(stats, epoch, generator, keep=keep)

    if not declared:
        Recording.statistics = None
        Recording.reads = Policy.reads
    return dataclass(frozen=True, kw_only=True)(Recording)


def _releasing_plan(declared: bool) -> CurationPlan:
    return CurationPlan(
        noise_filter=[_recording(LossMarginFilter, "margin")(warmup_epochs=0), _recording(SmallLossFilter, "small")(warmup_epochs=0)],
        reweight=_recording(Reweight, "reweight")(class_balance=True, warmup_epochs=0),
        prune=_recording(InfoBatchPrune, "prune", declared)(warmup_epochs=0),
        augment=_recording(AugmentStrength, "augment")(warmup_epochs=0),
        num_epochs=20,
    )


def test_the_plan_lets_go_of_statistics_no_later_stage_reads(planted):
    """Each stage finds held only what it or a later stage reads; nothing is held after the
    plan; the decision is the one of a plan that keeps every statistic."""
    _HELD_AT.clear()
    stats = planted.ledger.stats()
    released = _releasing_plan(declared=True).decide(stats, 3)
    assert _HELD_AT == {
        "margin": set(),
        "small": set(),  # mean_loss and aum (the default filter's) are read by no later stage
        "reweight": {"ema_loss"},  # small-loss's, read again by reweight and augment
        "prune": {"ema_loss"},  # labels went after reweighting; last_loss is the prune's own to compute
        "augment": {"ema_loss"},
    }
    assert stats.computed() == {}
    _HELD_AT.clear()
    stats = planted.ledger.stats()
    kept = _releasing_plan(declared=False).decide(stats, 3)  # the undeclared prune keeps everything until it ran
    assert _HELD_AT["prune"] >= {"mean_loss", "ema_loss", "labels"}
    _assert_same(released, kept)
