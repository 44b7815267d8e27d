"""``CurationCallback``: re-curates the training set between epochs."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from ..curation import CurationPlan, Decision, Ledger, LedgerStats
from .datamodule import CuratedDataModule
from .loss import _curated_datamodule


def _set_epoch_length(trainer: L.Trainer, num_batches: int) -> None:
    """Tell the fit loop how many batches the next epoch has.

    Lightning sizes the epoch once, when the loader is set up (its batch count, the
    combined loader's iteration limit, the validation interval); a curated epoch can be
    shorter or longer, so all three follow the new length, ``limit_train_batches`` applied.
    """
    limit = trainer.limit_train_batches
    batches = min(num_batches, limit) if isinstance(limit, int) else int(num_batches * (limit if limit is not None else 1.0))
    loop = trainer.fit_loop
    loop.max_batches = batches
    if loop._combined_loader is not None:
        loop._combined_loader.limits = [batches]
    if isinstance(trainer.val_check_interval, float) and trainer.val_check_batch not in (None, float("inf")):
        trainer.val_check_batch = max(1, int(batches * trainer.val_check_interval))


class CurationCallback(Callback):
    """Track each sample's loss and re-curate the training set at every epoch end.

    Per step it adds nothing beyond what :func:`curated_loss` records in :attr:`ledger`.
    At the end of each training epoch it syncs the ledger across ranks, asks the plan for
    the next epoch's decision (identical on every rank), publishes it into the data
    module's snapshot before the next epoch's loader starts, and logs ``curation/*`` metrics.

    Args:
        plan: the policies to apply (default: no curation, statistics only).
        num_classes: for margin/confidence statistics (taken from the logits when omitted).
        ema: smoothing of the per-sample EMA loss.
    """

    records_losses = True

    def __init__(self, plan: CurationPlan | None = None, *, num_classes: int | None = None, ema: float = 0.9) -> None:
        self.plan = plan or CurationPlan()
        self.num_classes = num_classes
        self.ema = ema
        self.ledger: Ledger | None = None
        self.stats: LedgerStats | None = None
        self.decision: Decision | None = None
        self.history: list[dict[str, float]] = []
        self._pending_state: dict[str, Any] | None = None
        self._datamodule: CuratedDataModule | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.plan.seed, num_classes=self.num_classes, ema=self.ema)

    # -- lifecycle ---------------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.ledger is not None:
            return
        dm = self._datamodule = _curated_datamodule(trainer)
        if self.plan.num_epochs is None and trainer.max_epochs is not None and trainer.max_epochs > 0:
            self.plan.num_epochs = trainer.max_epochs
        self.ledger = Ledger(dm.train_stream.num_samples, self.num_classes, device=pl_module.device, ema=self.ema)
        if self._pending_state is not None:
            self._restore(dm, self._pending_state)
            self._pending_state = None

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ledger is not None and self.ledger.device != pl_module.device:
            self.ledger = self.ledger.to(pl_module.device)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ledger.set_epoch(trainer.current_epoch)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = _curated_datamodule(trainer)
        next_epoch = trainer.current_epoch + 1
        self.stats = self.ledger.stats()  # syncs across ranks; kept for monitors this epoch
        self.decision = self.plan.decide(self.stats, next_epoch)
        self.decision.publish_to(dm.snapshot)
        _set_epoch_length(trainer, dm.num_training_batches(next_epoch))
        self._log(trainer, pl_module, dm)

    # -- metrics -----------------------------------------------------------------------
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, dm: CuratedDataModule) -> None:
        metrics = epoch_metrics(self.decision, dm.skip_counts())
        metrics["curation/next_epoch_batches"] = float(trainer.num_training_batches)
        self.history.append({"epoch": float(trainer.current_epoch), **metrics})
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)

    # -- checkpoints -------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        if self.ledger is None:
            return {}
        return {
            "ledger": self.ledger.state_dict(),
            "decision": None if self.decision is None else self.decision.to("cpu").state_dict(),
            "plan": self.plan.state_dict(),
            "history": self.history,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.ledger is None:
            self._pending_state = state_dict
            return
        self._restore(self._datamodule, state_dict)

    def _restore(self, dm: CuratedDataModule, state: dict[str, Any]) -> None:
        self.ledger.load_state_dict(state["ledger"])
        self.plan.load_state_dict(state.get("plan", {}))
        self.history = list(state.get("history", []))
        if state.get("decision") is not None:
            self.decision = Decision.from_state_dict(state["decision"]).to(self.ledger.device)
            self.decision.publish_to(dm.snapshot)
        else:
            rank_zero_warn("curation checkpoint holds no decision: the next epoch reads every sample")


def epoch_metrics(decision: Decision, skips: dict[str, int] | None = None) -> dict[str, float]:
    """Scalar ``curation/*`` metrics of one decision (one host sync)."""
    summary = decision.summary()
    n = max(decision.num_samples, 1)
    kept_weights = decision.weight[decision.keep]
    metrics = {
        "curation/kept_frac": float(decision.keep.sum()) / n,
        "curation/kept": float(decision.keep.sum()),
        "curation/flagged": float(summary["flagged"]),
        "curation/pruned": float(summary["pruned"]),
        "curation/weight_mean": float(kept_weights.mean()) if kept_weights.numel() else 0.0,
        "curation/weight_std": float(kept_weights.std()) if kept_weights.numel() > 1 else 0.0,
        "curation/weight_max": float(kept_weights.max()) if kept_weights.numel() else 0.0,
        "curation/strength_mean": float(decision.strength[decision.keep].mean()) if kept_weights.numel() else 0.0,
    }
    for name, value in decision.info.items():
        metrics[f"curation/{name}"] = float(value)
    for kind, count in (skips or {}).items():
        metrics[f"curation/skipped_{kind}"] = float(count)
    return metrics
