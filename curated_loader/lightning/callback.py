"""``CurationCallback``: re-curates the training set between epochs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from ..checks import OneOf, Range, run_checks
from ..curation import (
    CurationPlan,
    Decision,
    Ledger,
    LedgerStats,
    ShardedLedger,
    make_ledger,
)
from ..curation.sharded import LedgerMode
from .datamodule import CuratedDataModule
from .loss import _curated_datamodule
from .run_record import FINAL_STATE, run_record, save_final_state


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
        final_state: file the curation state is written to when fit ends (relative paths
            are beside the checkpoint folder, by default ``<log dir>/checkpoints/``, or in
            the log dir without checkpointing), if the trainer keeps
            checkpoints or logs; ``None`` writes none. ``curated-loader report``/``export``
            read it like a checkpoint.
        ledger_mode: ``"dense"`` (every rank holds all N rows), ``"sharded"`` (each rank holds
            the rows of the ids it owns; plans run over the slices and the decision is
            all-gathered) or ``"auto"``: sharded with several ranks and at least
            ``AUTO_SHARD_MIN_SAMPLES`` samples (see :func:`~curated_loader.curation.make_ledger`).
            With a sharded ledger, ``decision.reason``/``score`` and :attr:`stats` cover this
            rank's ids only (``decision.offset``); the ``curation/*`` metrics are global.

    :attr:`stats` holds the statistics of the last decision from the epoch end that made it
    (for callbacks that log it there, e.g. :class:`~curated_loader.reporting.CurationMonitor`)
    until the next training epoch starts; then it is ``None``. Held on, the ledger would
    compute every statistic still unread before its next record, to keep them as they were:
    up to 46 bytes per (owned) sample, held through the epoch.
    """

    records_losses = True
    #: argument → range check, run at construction (and by the Hydra schema validation)
    argument_checks = {"ema": Range(0.0, 1.0, hi_open=True), "num_classes": Range(2, optional=True),
                       "ledger_mode": OneOf(("dense", "sharded", "auto"))}

    def __init__(self, plan: CurationPlan | None = None, *, num_classes: int | None = None, ema: float = 0.9,
                 final_state: str | os.PathLike | None = FINAL_STATE, ledger_mode: LedgerMode = "auto") -> None:
        run_checks(locals(), self.argument_checks)
        self.plan = plan or CurationPlan()
        self.final_state = final_state
        self.num_classes = num_classes
        self.ema = ema
        self.ledger_mode = ledger_mode
        self.ledger: Ledger | ShardedLedger | None = None
        self.stats: LedgerStats | None = None
        self.decision: Decision | None = None
        self.history: list[dict[str, float]] = []
        self._pending_state: dict[str, Any] | None = None
        self._datamodule: CuratedDataModule | None = None
        self._record: dict[str, Any] = {}

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
        # a sharded ledger is made where training runs (it cannot move); a dense one moves at train start
        sharded = self.ledger_mode != "dense" and trainer.world_size > 1
        device = trainer.strategy.root_device if sharded else pl_module.device
        self.ledger = make_ledger(dm.train_stream.num_samples, self.num_classes, device, self.ema, mode=self.ledger_mode)
        self._record = run_record(self.plan, dm.train_stream.index)
        if self._pending_state is not None:
            self._restore(dm, self._pending_state)
            self._pending_state = None

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(self.ledger, Ledger) and self.ledger.device != pl_module.device:
            self.ledger = self.ledger.to(pl_module.device)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stats = None  # before the first record: see the class docstring
        self.ledger.set_epoch(trainer.current_epoch)
        if isinstance(self.ledger, ShardedLedger):  # the epoch's record buffer in one piece (freed for the plan)
            dm = _curated_datamodule(trainer)
            self.ledger.reserve_epoch(dm.num_training_batches(trainer.current_epoch) * dm.batch_size)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = _curated_datamodule(trainer)
        next_epoch = trainer.current_epoch + 1
        self._decide(dm, next_epoch)
        _set_epoch_length(trainer, dm.num_training_batches(next_epoch))
        self._log(trainer, pl_module, dm)

    def _decide(self, dm: CuratedDataModule, epoch: int) -> None:
        """Make and publish the decision for ``epoch`` from everything recorded so far."""
        self.stats = self.ledger.stats()  # syncs across ranks; read by monitors at this epoch end (a slice if sharded)
        if isinstance(self.ledger, ShardedLedger):
            self.ledger.release_buffer()  # the synced records' blocks: free while the plan runs
        self.decision = self.plan.decide(self.stats, epoch)  # all N ids on every rank (gathered if sharded)
        self.decision.publish_to(dm.snapshot)

    # -- metrics -----------------------------------------------------------------------
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, dm: CuratedDataModule) -> None:
        metrics = epoch_metrics(self.decision, dm.skip_counts())
        metrics["curation/next_epoch_batches"] = float(trainer.num_training_batches)
        self.history.append({"epoch": float(trainer.current_epoch), **metrics})
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)

    # -- the final state ---------------------------------------------------------------
    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the end-of-training curation state (whatever the checkpoint policy kept).

        Global rank 0 writes it; every rank resolves the path, since ``trainer.log_dir`` is a
        collective (a broadcast) under DDP."""
        if self.final_state is None or self.ledger is None:
            return
        if trainer.checkpoint_callback is None and not trainer.loggers:
            return  # the trainer writes nothing to disk: neither does the callback
        path = Path(self.final_state)
        if not path.is_absolute():
            checkpoints = getattr(trainer.checkpoint_callback, "dirpath", None)
            base = Path(checkpoints).parent if checkpoints else Path(trainer.log_dir or trainer.default_root_dir)
            path = base / path
        if isinstance(self.ledger, ShardedLedger) or trainer.is_global_zero:
            state = self.state_dict()  # a sharded ledger gathers its slices: a collective, on every rank
        if trainer.is_global_zero:
            save_final_state(path, state, epoch=trainer.current_epoch, global_step=trainer.global_step)

    # -- checkpoints -------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        if self.ledger is None:
            return {}
        if self.decision is not None and self.decision.owner_local:  # sharded: reports need every id's reason
            self.decision = self.decision.whole(self.ledger.reducer)
        return {
            "ledger": self.ledger.state_dict(),
            "decision": None if self.decision is None else self.decision.to("cpu").state_dict(),
            "decision_pending": self._pending_decision(),
            "plan": self.plan.state_dict(),
            "history": self.history,
            **self._record,
        }

    def _pending_decision(self) -> int | None:
        """The epoch whose decision is still to be made when a checkpoint is written after
        an epoch's last batch but before its end (e.g. by a step checkpoint), else None."""
        completed = self._datamodule.completed_epoch if self._datamodule is not None else None
        if completed is None or (self.decision is not None and self.decision.epoch == completed + 1):
            return None
        return completed + 1

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
        pending = state.get("decision_pending")
        if pending is not None:  # the ledger holds the whole epoch: decide as the epoch end would have
            self._decide(dm, int(pending))
            self.history.append({"epoch": float(pending - 1), **epoch_metrics(self.decision)})
        elif state.get("decision") is not None:
            self.decision = Decision.from_state_dict(state["decision"]).to(self.ledger.device)
            self.decision.publish_to(dm.snapshot)
        else:
            rank_zero_warn("curation checkpoint holds no decision: the next epoch reads every sample")


def epoch_metrics(decision: Decision, skips: dict[str, int] | None = None) -> dict[str, float]:
    """Scalar ``curation/*`` metrics of one decision (one host sync)."""
    summary, kept = decision.summary(), decision.kept_summary()
    metrics = {
        "curation/kept_frac": kept["kept"] / max(decision.num_samples, 1),
        "curation/kept": kept["kept"],
        "curation/flagged": float(summary["flagged"]),
        "curation/pruned": float(summary["pruned"]),
        **{f"curation/{name}": kept[name] for name in ("weight_mean", "weight_std", "weight_max", "strength_mean")},
    }
    for name, value in decision.info.items():
        metrics[f"curation/{name}"] = float(value)
    for kind, count in (skips or {}).items():
        metrics[f"curation/skipped_{kind}"] = float(count)
    return metrics
