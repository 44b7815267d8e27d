"""Curation policies: pure functions ``(stats, epoch, generator, *, keep=None, ...)`` and the
policy classes that hold their hyperparameters and schedules."""

from .augment import AugmentStrength, difficulty, strength
from .noise import (
    GMM1D,
    AUMFilter,
    CartographyFilter,
    GMMFilter,
    LossMarginFilter,
    SmallLossFilter,
    aum,
    cartography,
    fit_gmm_1d,
    gmm,
    loss_margin,
    separation,
    small_loss,
)
from .prune import InfoBatchPrune, infobatch
from .reweight import Reweight, balance_classes, normalize_clipped, sample_weights, stochastic_round

__all__ = [
    "AUMFilter",
    "AugmentStrength",
    "CartographyFilter",
    "GMM1D",
    "GMMFilter",
    "InfoBatchPrune",
    "LossMarginFilter",
    "Reweight",
    "SmallLossFilter",
    "aum",
    "balance_classes",
    "cartography",
    "difficulty",
    "fit_gmm_1d",
    "gmm",
    "infobatch",
    "loss_margin",
    "normalize_clipped",
    "sample_weights",
    "separation",
    "small_loss",
    "stochastic_round",
    "strength",
]
