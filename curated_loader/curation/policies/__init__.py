"""Curation policies: pure functions ``(stats, epoch, generator, *, keep=None, ...)`` and the
policy classes that hold their hyperparameters and schedules."""

from .augment import AugmentStrength, difficulty, strength
from .noise import (
    GMM1D,
    AUMFilter,
    CartographyFilter,
    GMMFilter,
    SmallLossFilter,
    aum,
    cartography,
    fit_gmm_1d,
    gmm,
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
    "Reweight",
    "SmallLossFilter",
    "aum",
    "balance_classes",
    "cartography",
    "difficulty",
    "fit_gmm_1d",
    "gmm",
    "infobatch",
    "normalize_clipped",
    "sample_weights",
    "small_loss",
    "stochastic_round",
    "strength",
]
