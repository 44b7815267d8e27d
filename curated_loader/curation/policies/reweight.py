"""Reweighting: loss-importance and class-balanced weights, delivered as loss weights or as
integer resampling counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...checks import OneOf, Range
from ..decision import WeightPart
from ..draws import IdDraws, uniform_draws
from ..ledger import LedgerStats
from ..masking import fill_, in_steps, zero_outside_
from ..reducer import Reducer, masked_min_max
from ..schedule import LOSS_KEY, Policy

#: :func:`normalize_clipped`'s default step limit and tolerance on the mean.
NEWTON_MAX_ITER, NEWTON_TOL = 50, 1e-6


def normalize_clipped(
    raw: torch.Tensor,
    members: torch.Tensor,
    w_min: float = 0.0,
    w_max: float = float("inf"),
    *,
    max_iter: int = NEWTON_MAX_ITER,
    tol: float = NEWTON_TOL,
    reducer: Reducer | None = None,
) -> torch.Tensor:
    """``clamp(c * raw, w_min, w_max)`` on ``members`` (0 elsewhere), with the scale ``c``
    chosen so the mean over members is 1.

    The clip always holds exactly. ``mean(clamp(c * raw))`` is monotone in ``c``; ``c`` is
    found by Newton steps on the linear piece at hand, kept inside a bisection bracket, until
    the mean is within ``tol`` of 1 (a few host syncs). Needs ``0 <= w_min <= 1 <= w_max``; if
    no ``c`` reaches mean 1 (e.g. every raw weight is 0), the closest clipped result is
    returned. ``reducer`` (default: these are all the samples) makes every sum global, for the
    slice of a sharded ledger.
    """
    return _normalize_clipped(raw, members, w_min, w_max, max_iter, tol, reducer or Reducer(raw.numel()), owned=False)


def _normalize_clipped(
    raw: torch.Tensor,
    members: torch.Tensor,
    w_min: float,
    w_max: float,
    max_iter: int,
    tol: float,
    reducer: Reducer,
    owned: bool,
) -> torch.Tensor:
    """:func:`normalize_clipped`; with ``owned`` a float32 ``raw`` may be overwritten (no copy)."""
    if not 0.0 <= w_min <= 1.0 <= w_max:
        raise ValueError(f"need 0 <= w_min <= 1 <= w_max, got [{w_min}, {w_max}]")
    count = torch.count_nonzero(members)
    local = int(count)
    n = int(reducer.sum(count)) if reducer.distributed else local
    if n == 0:
        return torch.zeros_like(raw, dtype=torch.float32)
    if local < raw.numel():  # non-members count as 0
        raw = zero_outside_(raw if owned and raw.dtype == torch.float32 else raw.to(torch.float32, copy=True), members)
    else:
        raw = raw.to(torch.float32)
    outside = (reducer.total - n) * w_min  # non-members have raw 0, so clamp gives them w_min
    total = float(reducer.sum(raw.sum()))
    c = n / total if total > 0 else 1.0
    if local < raw.numel():  # the extremes of raw with non-members counted as total / n
        extremes = torch.stack([*masked_min_max(raw, members), raw.new_tensor(total / n)])
    lo_raw, hi_raw = (float(v) for v in reducer.min_max(extremes if local < raw.numel() else raw))
    if w_min <= lo_raw * c and hi_raw * c <= w_max:  # nothing to clip: one scale does it
        return raw * c
    low, high = 0.0, float("inf")
    scaled = torch.empty_like(raw)  # every step's scaled weights, then the result: no fresh array per step
    for _ in range(max_iter):
        err = (float(reducer.sum(torch.mul(raw, c, out=scaled).clamp_(w_min, w_max).sum())) - outside) / n - 1.0
        if abs(err) < tol:
            break
        low, high = (c, high) if err < 0 else (low, c)
        slope = float(reducer.sum(_unclipped_raw_(scaled, raw, w_min, w_max).sum())) / n
        step = c - err / slope if slope > 0 else float("nan")
        if low < step < high:
            c = step
        else:
            c = 0.5 * (low + high) if high < float("inf") else 2.0 * max(c, 1e-30)
    return zero_outside_(torch.mul(raw, c, out=scaled).clamp_(w_min, w_max), members)


def _unclipped_raw_(scaled: torch.Tensor, raw: torch.Tensor, w_min: float, w_max: float) -> torch.Tensor:
    """``scaled`` (clipped to ``[w_min, w_max]``) overwritten with ``raw`` where it lies
    strictly inside the clip, 0 where it sits on a bound: the slope of the clipped sum."""
    for part, raw_part in in_steps(scaled, raw):
        on_bound = (part <= w_min) | (part >= w_max)
        fill_(part.copy_(raw_part), on_bound, 0.0)
    return scaled


#: Ids per step of class balance on CPU: its temporaries stay a few MiB, whatever N.
CLASS_BLOCK = 1 << 20


def _blocks(n: int, device: torch.device) -> range:
    """Starts of class balance's steps: :data:`CLASS_BLOCK` ids on CPU, all at once elsewhere."""
    return range(0, n, CLASS_BLOCK if device.type == "cpu" else max(n, 1))


def _labelled(members: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The members whose label is known (>= 0)."""
    return members & (labels >= 0)


def _class_index(labels: torch.Tensor, buffer: torch.Tensor | None) -> torch.Tensor:
    """``labels.clamp_min(0)`` (unknown labels as class 0), in ``buffer`` (the previous
    step's result, at least as long) when given."""
    if buffer is None:
        return labels.clamp_min(0)
    return torch.clamp(labels, min=0, out=buffer[: labels.numel()])


def _class_mass(raw: torch.Tensor, labels: torch.Tensor, members: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float64 sums of ``raw`` per class over the labelled ``members``, step by step: on CPU by
    ``bincount`` (a serial loop, twice as fast there as the accumulating ``index_put_``), the
    steps' sums added in order; elsewhere by ``index_put_``."""
    mass = torch.zeros(num_classes, dtype=torch.float64, device=raw.device)
    size = min(raw.numel(), CLASS_BLOCK)
    masked, wide, classes = torch.empty_like(raw[:size]), torch.empty_like(raw[:size], dtype=torch.float64), None
    for start in _blocks(raw.numel(), raw.device):  # every step's values and classes in the same buffers
        block = slice(start, start + CLASS_BLOCK)
        count = raw[block].numel()
        kept = zero_outside_(masked[:count].copy_(raw[block]), _labelled(members[block], labels[block]))
        weight = wide[:count].copy_(kept)
        classes = _class_index(labels[block], classes)
        if raw.device.type == "cpu":
            mass += torch.bincount(classes, weights=weight, minlength=num_classes)[:num_classes]
        else:
            mass.index_put_((classes,), weight, accumulate=True)
    return mass


def balance_classes(
    raw: torch.Tensor,
    labels: torch.Tensor,
    members: torch.Tensor,
    reducer: Reducer | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rescale ``raw`` so every class present among ``members`` carries the same total mass
    (the total over labelled members is kept). Members with label -1 are left as they are.
    ``reducer`` sums the class masses over the ranks of a sharded ledger (two ``all_reduce``).
    A new tensor, or ``out`` (which may be ``raw`` itself); the work runs in steps of
    :data:`CLASS_BLOCK` ids on CPU."""
    reducer = reducer or Reducer(raw.numel())
    top = labels.amax().clamp_min(0) if labels.numel() else labels.new_tensor(-1)
    num_classes = int(reducer.max(top) if reducer.distributed else top) + 1
    mass = reducer.sum(_class_mass(raw, labels, members, num_classes))
    present = mass > 0
    target = mass.sum() / present.sum().clamp_min(1)
    scale = torch.where(present, target / mass.clamp_min(1e-300), 0.0).to(raw.dtype)
    out = torch.empty_like(raw) if out is None else out
    factors, classes = torch.empty_like(raw[: min(raw.numel(), CLASS_BLOCK)]), None
    for start in _blocks(raw.numel(), raw.device):  # every step's classes and factors in the same buffers
        block = slice(start, start + CLASS_BLOCK)
        unlabelled = _labelled(members[block], labels[block]).logical_not_()
        classes = _class_index(labels[block], classes)
        factor = fill_(torch.index_select(scale, 0, classes, out=factors[: classes.numel()]), unlabelled, 1.0)
        torch.mul(factor, raw[block], out=out[block])
    return out


def stochastic_round(
    weight: torch.Tensor, generator: IdDraws | torch.Generator | None = None, reducer: Reducer | None = None
) -> torch.Tensor:
    """Integer counts with ``E[count] = weight``: floor plus a Bernoulli of the fraction (one
    uniform per sample; per global id with :class:`IdDraws` and the rows' ``reducer``)."""
    base = torch.floor(weight)
    draw = uniform_draws(generator, reducer or Reducer(weight.numel()), weight.numel(), weight.device)
    return (base + (draw < weight - base).to(base.dtype)).to(torch.int32)


def sample_weights(
    stats: LedgerStats,
    epoch: int,
    generator: torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    alpha: float = 0.5,
    eps: float = 1e-2,
    w_min: float = 0.2,
    w_max: float = 5.0,
    class_balance: bool = False,
    as_counts: bool = False,
    loss_key: str = "ema_loss",
) -> WeightPart:
    """Weights proportional to ``(loss + eps) ** alpha`` (``alpha=0``: uniform), optionally
    class-balanced with ``stats.labels``, then scaled to mean 1 over ``keep`` and clipped to
    ``[w_min, w_max]`` (see :func:`normalize_clipped`). Unseen samples get the mean raw
    weight of the seen ones. Class balance is exact when no weight hits the clip."""
    members = torch.ones_like(stats.seen) if keep is None else keep
    reducer = stats.reducer
    raw = getattr(stats, loss_key).clamp_min(0).add_(eps).pow_(alpha)
    if not stats.all_seen:
        seen = members & stats.seen
        raw_sum, num = zero_outside_(raw.clone(), seen).sum(), torch.count_nonzero(seen)
        if reducer.distributed:  # one all_reduce of both
            raw_sum, num = reducer.sum(torch.stack([raw_sum.to(torch.float64), num.to(torch.float64)]))
        neutral = raw_sum / num.clamp_min(1)
        raw = torch.where(stats.seen, raw, torch.where(num > 0, neutral, 1.0))
    if class_balance:
        raw = balance_classes(raw, stats.labels, members, reducer, out=raw)  # raw is this function's own
    weight = _normalize_clipped(raw, members, w_min, w_max, NEWTON_MAX_ITER, NEWTON_TOL, reducer, owned=True)
    return WeightPart(weight, as_counts=as_counts)


@dataclass(frozen=True, kw_only=True)
class Reweight(Policy):
    """Policy class of :func:`sample_weights`. ``as_counts=True`` delivers the final weights as
    resampling counts (see :class:`~curated_loader.curation.plan.CurationPlan`)."""

    alpha: float = 0.5
    eps: float = 1e-2
    w_min: float = 0.2
    w_max: float = 5.0
    class_balance: bool = False
    as_counts: bool = False
    loss_key: str = "ema_loss"
    warmup_epochs: int = 1
    function = staticmethod(sample_weights)
    statistics = frozenset()
    checks = {
        "alpha": Range(-math.inf, math.inf), "eps": Range(0.0, lo_open=True), "w_min": Range(0.0, 1.0),
        "w_max": Range(1.0), "class_balance": OneOf((False, True)), "as_counts": OneOf((False, True)),
        "loss_key": LOSS_KEY,
    }

    def reads(self) -> frozenset[str]:
        """Its ``loss_key``, and ``labels`` with class balance."""
        return frozenset({self.loss_key, "labels"} if self.class_balance else {self.loss_key})
