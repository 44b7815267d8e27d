"""Every policy argument is range-checked when the object is built, from any entry point:
a ``ConfigError`` (a ``ValueError``) naming the argument and the value."""

from __future__ import annotations

import logging
import math
from dataclasses import fields

import pytest

from curated_loader import CuratedDataModule, CurationCallback
from curated_loader.checks import ConfigError
from curated_loader.curation import (
    AugmentStrength,
    AUMFilter,
    CartographyFilter,
    LossMarginFilter,
    CurationPlan,
    GMMFilter,
    InfoBatchPrune,
    Reweight,
    SmallLossFilter,
)
from curated_loader.curation.plan import SEED_ENV

POLICIES = (SmallLossFilter, GMMFilter, AUMFilter, CartographyFilter, LossMarginFilter, InfoBatchPrune, Reweight, AugmentStrength)

# (class, argument, values that must be accepted, values that must be rejected)
TABLE = [
    (cls, arg, ok, bad)
    for cls in POLICIES
    for arg, ok, bad in (("warmup_epochs", [0, 7], [-1, "2"]), ("cooldown_fraction", [0.0, 1.0], [-0.1, 1.5, math.nan]))
] + [
    (SmallLossFilter, "quantile", [0.0, 1.0], [-0.1, 1.01, math.nan]),
    (SmallLossFilter, "loss_key", ["ema_loss", "mean_loss", "last_loss"], ["loss", None]),
    (GMMFilter, "tau", [0.0, 1.0], [1.5, -0.1, math.nan, "0.5"]),
    (GMMFilter, "bins", [None, 2, 4096], [1, 0, -3]),
    (GMMFilter, "max_iter", [1, 500], [0, -1]),
    (GMMFilter, "tol", [1e-12, 1.0], [0.0, -1e-6]),
    (GMMFilter, "reg_covar", [0.0, 1e-2], [-1e-4]),
    (GMMFilter, "loss_key", ["ema_loss", "mean_loss"], ["mean"]),
    (AUMFilter, "threshold", [-2.0, 0.0, 3.5], [math.nan, "0"]),
    (AUMFilter, "quantile", [None, 0.0, 1.0], [-0.5, 1.5]),
    (LossMarginFilter, "tau", [0.0, 1.0], [1.5, -0.1, math.nan]),
    (LossMarginFilter, "min_separation", [0.0, 2.0], [-1.0, math.nan]),
    (LossMarginFilter, "max_flag_fraction", [0.0, 0.85, 1.0], [1.2, -0.1]),
    (LossMarginFilter, "loss_key", ["mean_loss", "ema_loss"], ["loss"]),
    (LossMarginFilter, "bins", [None, 2, 1024], [1, 0]),
    (LossMarginFilter, "margin_fallback", [False, True], ["yes"]),
    (LossMarginFilter, "margin_rule", ["agree", "negative"], ["both"]),
    (LossMarginFilter, "margin_threshold", [0.0, 0.25], [-0.1, math.nan]),
    (CartographyFilter, "max_confidence", [0.0, 1.0], [-0.1, 1.1]),
    (CartographyFilter, "max_variability", [0.0, 0.5], [-0.1, 0.6]),
    (InfoBatchPrune, "ratio", [0.0, 0.99], [1.0, 1.5, -0.1]),
    (InfoBatchPrune, "loss_key", ["ema_loss"], ["ema"]),
    (Reweight, "alpha", [-1.0, 0.0, 2.0], [math.nan, None]),
    (Reweight, "eps", [1e-6, 1.0], [0.0, -1.0]),
    (Reweight, "w_min", [0.0, 1.0], [-0.1, 1.5]),
    (Reweight, "w_max", [1.0, 10.0], [0.5, math.nan]),
    (Reweight, "class_balance", [False, True], ["yes", 2]),
    (Reweight, "as_counts", [False, True], ["no"]),
    (Reweight, "loss_key", ["last_loss"], ["x"]),
    (AugmentStrength, "mapping", ["easy_strong", "hard_strong", "constant"], ["sideways"]),
    (AugmentStrength, "min_strength", [0.0, 1.0], [-0.1, 1.5]),
    (AugmentStrength, "max_strength", [0.0, 1.0], [-0.2, 1.5]),
    (AugmentStrength, "suspect_strength", [0.0, 1.0], [-0.1, 2.0]),
    (AugmentStrength, "loss_key", ["mean_loss"], ["m"]),
]

# arguments that interact: the constructor checks their relation, naming the first
PAIRED = {(AugmentStrength, "min_strength"): {"max_strength": 1.0}, (AugmentStrength, "max_strength"): {"min_strength": 0.0}}


def test_table_covers_every_policy_argument():
    covered = {(cls, arg) for cls, arg, _, _ in TABLE}
    for cls in POLICIES:
        for f in fields(cls):
            assert (cls, f.name) in covered, f"{cls.__name__}.{f.name} has no range test"


@pytest.mark.parametrize(("cls", "arg", "ok", "bad"), TABLE, ids=[f"{c.__name__}.{a}" for c, a, _, _ in TABLE])
def test_policy_argument_range(cls, arg, ok, bad):
    extra = PAIRED.get((cls, arg), {})
    for value in ok:
        assert getattr(cls(**{**extra, arg: value}), arg) == value
    for value in bad:
        with pytest.raises(ConfigError) as info:
            cls(**{**extra, arg: value})
        assert info.value.key == arg
        assert str(info.value).startswith(f"{arg}: ") and repr(value) in str(info.value)
        assert isinstance(info.value, ValueError)


def test_strength_bounds_are_ordered():
    with pytest.raises(ConfigError, match=r"^min_strength: must be <= max_strength \(0.2\), got 0.8"):
        AugmentStrength(min_strength=0.8, max_strength=0.2)


def test_the_issue_cases_fail_at_construction():
    with pytest.raises(ValueError, match=r"^tau: must be in \[0.0, 1.0\], got 1.5$"):
        GMMFilter(tau=1.5)
    with pytest.raises(ValueError, match=r"^ratio: must be in \[0.0, 1.0\), got 1.5$"):
        CurationPlan(prune=InfoBatchPrune(ratio=1.5))


@pytest.mark.parametrize(("kwargs", "key"), [({"num_epochs": 0}, "num_epochs"), ({"seed": "7"}, "seed"), ({"seed": 1.5}, "seed")])
def test_plan_arguments(kwargs, key):
    with pytest.raises(ConfigError) as info:
        CurationPlan(**kwargs)
    assert info.value.key == key


def test_plan_seed_none_draws_once_and_logs(monkeypatch, caplog):
    for var in ("PL_GLOBAL_SEED", SEED_ENV, "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with caplog.at_level(logging.WARNING, logger="curated_loader.curation.plan"):
        first = CurationPlan(seed=None)
    assert f"drew seed {first.seed}" in caplog.text
    assert CurationPlan(seed=None).seed == first.seed  # drawn once: later plans (and DDP ranks) reuse it
    assert CurationPlan(seed=3).seed == 3


def test_plan_seed_none_uses_the_run_seed_or_refuses(monkeypatch):
    monkeypatch.delenv(SEED_ENV, raising=False)
    monkeypatch.setenv("PL_GLOBAL_SEED", "1234")
    assert CurationPlan(seed=None).seed == 1234
    monkeypatch.delenv("PL_GLOBAL_SEED")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="^seed: is None in a multi-process run"):
        CurationPlan(seed=None)


# the data module and the callback check their own arguments too (no shards are read at construction)
MODULE_TABLE = [
    (CuratedDataModule, {"fields": ()}, "fields"),
    (CuratedDataModule, {"fields": "npy"}, "fields"),
    (CuratedDataModule, {"batch_size": 0}, "batch_size"),
    (CuratedDataModule, {"eval_batch_size": -1}, "eval_batch_size"),
    (CuratedDataModule, {"num_workers": -2}, "num_workers"),
    (CuratedDataModule, {"shuffle_buffer": -1}, "shuffle_buffer"),
    (CuratedDataModule, {"mode": "random"}, "mode"),
    (CuratedDataModule, {"equalize": "drop"}, "equalize"),
    (CuratedDataModule, {"on_error": "ignore"}, "on_error"),
    (CuratedDataModule, {"augment_on": "gpu"}, "augment_on"),
    (CuratedDataModule, {"worker_timeout": -1.0}, "worker_timeout"),
    (CuratedDataModule, {"max_member_bytes": 0}, "max_member_bytes"),
    (CurationCallback, {"ema": 1.0}, "ema"),
    (CurationCallback, {"num_classes": 1}, "num_classes"),
]


@pytest.mark.parametrize(("cls", "kwargs", "key"), MODULE_TABLE, ids=[f"{c.__name__}.{k}" for c, _, k in MODULE_TABLE])
def test_module_arguments_fail_at_construction(cls, kwargs, key):
    build = (lambda **kw: cls("shards-{000..003}.tar", **kw)) if cls is CuratedDataModule else cls
    build()  # the defaults pass
    with pytest.raises(ConfigError) as info:
        build(**kwargs)
    assert info.value.key == key and repr(kwargs[key]) in str(info.value)
