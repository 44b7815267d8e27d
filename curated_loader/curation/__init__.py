"""The curation engine: a synced per-sample ledger, policies, and the plan that turns the
ledger's statistics into one decision per epoch. Plain torch, on any device."""

from .decision import Decision, NoisePart, PrunePart, Reason, StrengthPart, WeightPart
from .ledger import Ledger, LedgerStats
from .plan import CurationPlan, derive_seed
from .policies import (
    AugmentStrength,
    AUMFilter,
    CartographyFilter,
    GMMFilter,
    InfoBatchPrune,
    LossMarginFilter,
    Reweight,
    SmallLossFilter,
)
from .reduction import DEFAULT_REDUCTION, REDUCTIONS, weighted_loss
from .schedule import Policy, Scheduled, cooldown_start, is_active
from .sharded import OwnedStats, ShardedLedger, make_ledger

__all__ = [
    "DEFAULT_REDUCTION",
    "REDUCTIONS",
    "AUMFilter",
    "AugmentStrength",
    "CartographyFilter",
    "CurationPlan",
    "Decision",
    "GMMFilter",
    "InfoBatchPrune",
    "Ledger",
    "LedgerStats",
    "LossMarginFilter",
    "NoisePart",
    "OwnedStats",
    "Policy",
    "PrunePart",
    "Reason",
    "Reweight",
    "Scheduled",
    "ShardedLedger",
    "SmallLossFilter",
    "StrengthPart",
    "WeightPart",
    "cooldown_start",
    "derive_seed",
    "is_active",
    "make_ledger",
    "weighted_loss",
]
