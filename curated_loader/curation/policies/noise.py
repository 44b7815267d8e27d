"""Noise filters: flag samples whose label is likely wrong.

Each is a pure function ``(stats, epoch, generator, *, keep=None, ...) -> NoisePart`` plus a
policy class holding its hyperparameters and schedule. Only samples with the needed history
are judged (seen at least once; for AUM and cartography, seen with logits), restricted to
``keep`` when given; everything else is never flagged. Scores: higher = more suspicious.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...checks import OneOf, Range
from ..decision import NoisePart, Reason
from ..ledger import LedgerStats
from ..masking import fill_, in_steps, zero_outside_
from ..schedule import LOSS_KEY, Policy


def _judged(base: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return base if keep is None else base & keep


def _masked_score(score: torch.Tensor, judged: torch.Tensor, owned: bool = False) -> torch.Tensor:
    """``score`` where judged, 0 elsewhere; always a fresh tensor (in place if ``owned``)."""
    if not owned:
        score = score.clone()
    return score if int(torch.count_nonzero(judged)) == judged.numel() else zero_outside_(score, judged)


def small_loss(
    stats: LedgerStats,
    epoch: int,
    generator: torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    quantile: float = 0.2,
    loss_key: str = "ema_loss",
) -> NoisePart:
    """Flag the ``quantile`` fraction of judged samples with the largest loss (small-loss
    trick, Han et al. 2018). Score: the loss (the statistic itself, not a copy, when every
    sample is judged)."""
    loss = getattr(stats, loss_key)
    judged = _judged(stats.seen, keep)
    threshold = stats.quantile(loss, 1.0 - quantile, mask=judged)
    everyone = keep is None and stats.all_seen  # every sample is judged
    flagged = loss > threshold if quantile > 0 else torch.zeros_like(judged)
    if not everyone:
        flagged.logical_and_(judged)
    score = loss.float() if everyone else _masked_score(loss.float(), judged)
    return NoisePart(flagged, score, Reason.FLAGGED_SMALL_LOSS)


@dataclass(frozen=True)
class GMM1D:
    """A fitted two-component 1-D Gaussian mixture (component 0 has the smaller mean)."""

    means: torch.Tensor  # [2]
    variances: torch.Tensor  # [2]
    mix: torch.Tensor  # [2]
    iterations: int

    def log_odds_low(self, x: torch.Tensor) -> torch.Tensor:
        """log p(low | x) - log p(high | x), element-wise, as one quadratic in ``x``."""
        a, b, c = self._quadratic(x.dtype)
        return (x * a).add_(b).mul_(x).add_(c)

    def posterior_low(self, x: torch.Tensor) -> torch.Tensor:
        """p(low-mean component | x), element-wise."""
        return self.log_odds_low(x).sigmoid_()

    def posterior_low_(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`posterior_low` written into ``x`` (the same values; in steps on CPU, so no
        full-length temporary is made)."""
        a, b, c = self._quadratic(x.dtype)
        for (part,) in in_steps(x):
            part.copy_((part * a).add_(b).mul_(part).add_(c)).sigmoid_()
        return x

    def _quadratic(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The coefficients ``(a, b, c)`` of :meth:`log_odds_low`'s ``(a x + b) x + c``, as ``dtype``."""
        inv = 0.5 / self.variances
        a = inv[1] - inv[0]
        b = 2 * (self.means[0] * inv[0] - self.means[1] * inv[1])
        c = (
            torch.log(self.mix[0] / self.mix[1])
            - 0.5 * torch.log(self.variances[0] / self.variances[1])
            - self.means[0].square() * inv[0]
            + self.means[1].square() * inv[1]
        )
        return a.to(dtype), b.to(dtype), c.to(dtype)


def fit_gmm_1d(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    reg_covar: float = 5e-4,
) -> GMM1D:
    """EM for a two-component 1-D Gaussian mixture on (optionally weighted) points.

    Deterministic: responsibilities start as a hard split at the weighted mean. Stops after
    ``max_iter`` iterations or when the mean log-likelihood improves by less than ``tol``
    (one host sync per iteration). ``reg_covar`` is added to both variances.
    """
    x = x.to(torch.float64)
    w = torch.ones_like(x) if weight is None else weight.to(torch.float64)
    total = w.sum().clamp_min(1e-300)
    high = (x > (w * x).sum() / total).to(torch.float64)
    resp = torch.stack([1 - high, high], 1)
    previous = -math.inf
    means = variances = mix = torch.zeros(2, dtype=torch.float64, device=x.device)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        wr = resp * w[:, None]
        nk = wr.sum(0).clamp_min(1e-12)
        means = (wr * x[:, None]).sum(0) / nk
        variances = (wr * (x[:, None] - means).square()).sum(0) / nk + reg_covar
        mix = (nk / nk.sum()).clamp_min(1e-12)
        log_p = (
            torch.log(mix)
            - 0.5 * torch.log(2 * math.pi * variances)
            - (x[:, None] - means).square() / (2 * variances)
        )
        log_norm = torch.logsumexp(log_p, 1)
        resp = torch.exp(log_p - log_norm[:, None])
        mean_ll = float((w * log_norm).sum() / total)
        if abs(mean_ll - previous) < tol:
            break
        previous = mean_ll
    order = torch.argsort(means, stable=True)
    return GMM1D(means[order], variances[order], mix[order], iterations)


def _normalized(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Min-max normalization of ``values`` to [0, 1] for the range ``[lo, hi]``."""
    return (values - lo).mul_((hi - lo).clamp_min(1e-12).reciprocal()).clamp_(0.0, 1.0)


def _histogram(
    values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, judged: torch.Tensor | None, bins: int
) -> torch.Tensor:
    """int64 counts of the normalized ``values`` (:func:`_normalized` for ``[lo, hi]``; over
    ``judged`` when given) in ``bins`` equal bins of [0, 1], in steps (:func:`in_steps`): no
    full-length array."""
    counts = torch.zeros(bins, dtype=torch.int64, device=values.device)
    for step in in_steps(values) if judged is None else in_steps(values, judged):
        index = _normalized(step[0], lo, hi).mul_(bins).to(torch.int32).clamp_(max=bins - 1)
        if judged is not None:
            fill_(index, ~step[1], bins)  # an overflow bin, dropped below
        counts += torch.bincount(index, minlength=bins + 1)[:bins]
    return counts


def _fit_loss_gmm(
    stats: LedgerStats,
    judged: torch.Tensor,
    everywhere: bool,
    *,
    loss_key: str,
    bins: int | None,
    max_iter: int,
    tol: float,
    reg_covar: float,
) -> tuple[GMM1D, Callable[[], torch.Tensor]]:
    """The GMM fitted to the min-max normalized loss (over judged samples; on a ``bins``-bin
    histogram when ``bins`` is set: over a sharded ledger, the histogram's counts are summed
    across ranks, so every rank fits the dense ledger's mixture), and a function that returns
    that normalized loss (a new tensor, made only if asked for).

    A histogram fit over every sample depends on the values and the settings only, so the
    filters of one plan that ask for the same one (the default filter and the GMM filter on
    ``mean_loss``) share it through :meth:`LedgerStats.memo`: the second one skips the range,
    the histogram, their collectives and the EM."""
    reducer = stats.reducer
    if not bins and reducer.distributed:
        raise ValueError("bins=None fits the mixture on every sample: a sharded ledger needs bins (e.g. 1024)")
    values = getattr(stats, loss_key).float()
    key = ("loss_gmm", loss_key, bins, max_iter, tol, reg_covar) if bins and everywhere else None
    if key in stats.memo:
        lo, hi, model = stats.memo[key]
        return model, lambda: _normalized(values, lo, hi)
    lo, hi = reducer.min_max(values, None if everywhere else judged)
    if not bins:
        x = _normalized(values, lo, hi)
        return fit_gmm_1d(x, judged, max_iter=max_iter, tol=tol, reg_covar=reg_covar), lambda: x
    counts = reducer.sum(_histogram(values, lo, hi, None if everywhere else judged, bins)).to(torch.float64)
    centers = (torch.arange(bins, dtype=torch.float64, device=values.device) + 0.5) / bins
    model = fit_gmm_1d(centers, counts, max_iter=max_iter, tol=tol, reg_covar=reg_covar)
    if key is not None:
        stats.memo[key] = (lo, hi, model)
    return model, lambda: _normalized(values, lo, hi)


def gmm(
    stats: LedgerStats,
    epoch: int,
    generator: torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    tau: float = 0.5,
    bins: int | None = 1024,
    max_iter: int = 100,
    tol: float = 1e-6,
    reg_covar: float = 5e-4,
    loss_key: str = "ema_loss",
) -> NoisePart:
    """DivideMix (Li et al. 2020): fit a two-component GMM to the min-max normalized loss of
    judged samples; flag those with p(clean) <= ``tau`` (clean = low-mean component).

    With ``bins`` the EM runs on a ``bins``-bin histogram (bin centers weighted by counts;
    error at most half a bin width), then p(clean) is evaluated exactly per sample; with
    ``bins=None`` it runs on every sample. Score: 1 - p(clean).
    """
    judged = _judged(stats.seen, keep)
    if stats.num_seen < 2:
        zeros = torch.zeros(stats.num_samples, device=stats.device)
        return NoisePart(torch.zeros_like(judged), zeros, Reason.FLAGGED_GMM)
    everywhere = keep is None and stats.all_seen
    model, normalized = _fit_loss_gmm(stats, judged, everywhere, loss_key=loss_key, bins=bins,
                                      max_iter=max_iter, tol=tol, reg_covar=reg_covar)
    p_clean = model.posterior_low_(normalized())  # in place: no other full-length array
    flagged = (p_clean <= tau).logical_and_(judged)  # one bool array, not two
    noisy = p_clean.neg_().add_(1.0)  # the score 1 - p(clean), in place
    return NoisePart(flagged, _masked_score(noisy, judged, owned=True), Reason.FLAGGED_GMM)


def separation(model: GMM1D) -> float:
    """Ashman's D of a two-component mixture: ``|mu1 - mu0| / sqrt((var0 + var1) / 2)``;
    above ~2 the mixture is clearly bimodal."""
    return float((model.means[1] - model.means[0]).abs() / ((model.variances[0] + model.variances[1]) / 2).sqrt())


def loss_margin(
    stats: LedgerStats,
    epoch: int,
    generator: torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    tau: float = 0.1,
    min_separation: float = 2.0,
    max_flag_fraction: float = 0.85,
    loss_key: str = "mean_loss",
    bins: int | None = 1024,
    margin_fallback: bool = True,
    margin_rule: str = "negative",
    margin_threshold: float = 0.25,
) -> NoisePart:
    """The default noise filter: told neither the noise rate nor the noise type.

    1. Fit the two-component GMM of :func:`gmm` to the normalized ``loss_key`` of judged
       samples (seen with logits). If its components are separated (Ashman's D >=
       ``min_separation``) the loss is bimodal — symmetric-like noise, where the loss
       separates best — and samples with p(clean) <= ``tau`` are flagged (``filter_mode`` 0).
    2. Otherwise the loss is not bimodal (pair-flip and instance-dependent noise: the model
       partly learns the wrong labels). With ``margin_fallback`` the evidence is a negative
       area under the margin, AUM < -``margin_threshold`` (on average over training another
       class scored higher than the given label). ``margin_rule="agree"`` flags it only where
       the mixture also leans to noisy (p(clean) < 0.5); ``margin_rule="negative"`` flags all
       of it (``filter_mode`` 1). Without ``margin_fallback`` nothing is flagged
       (``filter_mode`` 2).
    3. Guard: if the evidence covers more than ``max_flag_fraction`` of the judged samples
       (loss mode: the flags; margin mode: the negative margins — an untrained or too weak
       model disagrees with most labels), nothing is flagged (``filter_guard`` 1).

    ``info`` reports ``filter_mode``, ``filter_separation`` and ``filter_guard`` (logged as
    ``curation/filter_*``). Score: 1 - p(clean) in loss mode, -AUM in margin mode.
    """
    if margin_rule not in ("agree", "negative"):
        raise ValueError(f"margin_rule must be 'agree' or 'negative', got {margin_rule!r}")
    judged = _judged(stats.has_logits, keep)
    reducer = stats.reducer
    num_judged = stats.num_with_logits if keep is None else reducer.count(judged)
    if num_judged < 2:
        zeros = torch.zeros(stats.num_samples, device=stats.device)
        info = {"filter_mode": 0.0, "filter_separation": 0.0, "filter_guard": 1.0}
        return NoisePart(torch.zeros_like(judged), zeros, Reason.FLAGGED_GMM, info)
    everywhere = num_judged == reducer.total
    model, normalized = _fit_loss_gmm(stats, judged, everywhere, loss_key=loss_key, bins=bins, max_iter=100,
                                      tol=1e-6, reg_covar=5e-4)
    d = separation(model)
    if d >= min_separation:
        p_clean = model.posterior_low_(normalized())  # in place: no other full-length array
        flagged = (p_clean <= tau).logical_and_(judged)
        score, reason, mode = p_clean.neg_().add_(1.0), Reason.FLAGGED_GMM, 0.0
        evidence = flagged
    elif margin_fallback:  # p(clean) only if the rule asks for it
        evidence = (stats.aum < -margin_threshold).logical_and_(judged)
        flagged = evidence & (model.posterior_low_(normalized()) < 0.5) if margin_rule == "agree" else evidence
        score, reason, mode = stats.aum.neg(), Reason.FLAGGED_AUM, 1.0
    else:
        evidence = flagged = torch.zeros_like(judged)
        score, reason, mode = model.posterior_low_(normalized()).neg_().add_(1.0), Reason.FLAGGED_GMM, 2.0
    guard = reducer.count(evidence) > max_flag_fraction * num_judged
    if guard:
        flagged = flagged.zero_()  # this function's own array in every mode
    info = {"filter_mode": mode, "filter_separation": d, "filter_guard": float(guard)}
    return NoisePart(flagged, _masked_score(score, judged, owned=True), reason, info)


def aum(
    stats: LedgerStats,
    epoch: int,
    generator: torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    threshold: float = 0.0,
    quantile: float | None = None,
) -> NoisePart:
    """Area under the margin (Pleiss et al. 2020): flag samples whose mean margin (assigned
    logit minus largest other logit) is below ``threshold``, or below the ``quantile`` of
    judged margins when ``quantile`` is given. Score: -AUM."""
    judged = _judged(stats.has_logits, keep)
    cut = threshold if quantile is None else stats.quantile(stats.aum, quantile, mask=judged)
    flagged = (stats.aum < cut).logical_and_(judged)
    return NoisePart(flagged, _masked_score(stats.aum.neg(), judged, owned=True), Reason.FLAGGED_AUM)


def cartography(
    stats: LedgerStats,
    epoch: int,
    generator: torch.Generator | None = None,
    *,
    keep: torch.Tensor | None = None,
    max_confidence: float = 0.2,
    max_variability: float = 0.1,
) -> NoisePart:
    """Dataset cartography (Swayamdipta et al. 2020): flag "hard-to-learn" samples, whose
    mean gold-label probability is below ``max_confidence`` *and* whose spread across
    observations is below ``max_variability``. Score: 1 - confidence."""
    judged = _judged(stats.has_logits, keep)
    flagged = judged & (stats.confidence < max_confidence) & (stats.variability < max_variability)
    score = _masked_score(stats.confidence.neg().add_(1.0), judged, owned=True)
    return NoisePart(flagged, score, Reason.FLAGGED_CARTOGRAPHY)


@dataclass(frozen=True, kw_only=True)
class SmallLossFilter(Policy):
    """Policy class of :func:`small_loss`."""

    quantile: float = 0.2
    loss_key: str = "ema_loss"
    warmup_epochs: int = 2
    function = staticmethod(small_loss)
    statistics = frozenset()
    checks = {"quantile": Range(0.0, 1.0), "loss_key": LOSS_KEY}


@dataclass(frozen=True, kw_only=True)
class GMMFilter(Policy):
    """Policy class of :func:`gmm`. Defaults follow the noisy-label benchmark: the mean loss
    over all epochs separates noise best, and a strict ``tau`` keeps early false flags out."""

    tau: float = 0.1
    bins: int | None = 1024
    max_iter: int = 100
    tol: float = 1e-6
    reg_covar: float = 5e-4
    loss_key: str = "mean_loss"
    warmup_epochs: int = 2
    function = staticmethod(gmm)
    statistics = frozenset()
    checks = {
        "tau": Range(0.0, 1.0), "bins": Range(2, optional=True), "max_iter": Range(1),
        "tol": Range(0.0, lo_open=True), "reg_covar": Range(0.0), "loss_key": LOSS_KEY,
    }


@dataclass(frozen=True, kw_only=True)
class LossMarginFilter(Policy):
    """Policy class of :func:`loss_margin`, the filter that needs neither the noise rate nor its kind. Its defaults were
    chosen on tuning seeds of the noisy-label benchmark (see ``docs/benchmarks.md``)."""

    tau: float = 0.1
    min_separation: float = 2.0
    max_flag_fraction: float = 0.85
    loss_key: str = "mean_loss"
    bins: int | None = 1024
    margin_fallback: bool = True
    margin_rule: str = "negative"
    margin_threshold: float = 0.25
    warmup_epochs: int = 15
    function = staticmethod(loss_margin)
    statistics = frozenset({"aum"})
    checks = {
        "tau": Range(0.0, 1.0), "min_separation": Range(0.0), "max_flag_fraction": Range(0.0, 1.0),
        "loss_key": LOSS_KEY, "bins": Range(2, optional=True), "margin_fallback": OneOf((False, True)),
        "margin_rule": OneOf(("agree", "negative")), "margin_threshold": Range(0.0),
    }


@dataclass(frozen=True, kw_only=True)
class AUMFilter(Policy):
    """Policy class of :func:`aum`."""

    threshold: float = 0.0
    quantile: float | None = None
    warmup_epochs: int = 2
    function = staticmethod(aum)
    statistics = frozenset({"aum"})
    checks = {"threshold": Range(-math.inf, math.inf), "quantile": Range(0.0, 1.0, optional=True)}


@dataclass(frozen=True, kw_only=True)
class CartographyFilter(Policy):
    """Policy class of :func:`cartography`."""

    max_confidence: float = 0.2
    max_variability: float = 0.1
    warmup_epochs: int = 2
    function = staticmethod(cartography)
    statistics = frozenset({"confidence", "variability"})
    checks = {"max_confidence": Range(0.0, 1.0), "max_variability": Range(0.0, 0.5)}
