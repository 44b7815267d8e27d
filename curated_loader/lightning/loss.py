"""The per-sample loss reducer: the one call a ``training_step`` makes."""

from __future__ import annotations

import lightning as L
import torch

from ..curation.reduction import DEFAULT_REDUCTION, check_reduction, weighted_loss
from .datamodule import CuratedDataModule


def _curated_datamodule(trainer: L.Trainer) -> CuratedDataModule:
    dm = getattr(trainer, "datamodule", None)
    if not isinstance(dm, CuratedDataModule):
        raise RuntimeError("curated_loss needs the Trainer to be fit with a CuratedDataModule (trainer.fit(model, datamodule=dm))")
    return dm


def curated_loss(
    module: L.LightningModule,
    loss: torch.Tensor,
    logits: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    *,
    reduction: str | None = None,
) -> torch.Tensor:
    """Record a batch's per-sample ``loss`` (``reduction="none"``) and return its weighted reduction.

    During training the losses (and, when given, ``logits`` [B, C] with ``targets`` [B]) go
    into the :class:`~curated_loader.CurationCallback`'s ledger under the batch's sample ids,
    and the result combines them with the batch's curation weights ``w``: ``reduction=
    "normalized"`` gives ``Σ w·ℓ / Σ w``, ``"mean"`` gives ``mean(w·ℓ)`` (upstream InfoBatch's;
    with Adam it changes the effective learning rate when the weights change — see
    :mod:`curated_loader.curation.reduction`). ``None`` takes the callback plan's
    ``reduction`` (default ``"normalized"``). Outside training (validation, test) it is the
    plain mean. Nothing here waits for the device.
    """
    if reduction is not None:
        check_reduction(reduction)
    if loss.ndim != 1:
        raise ValueError(f"curated_loss needs a per-sample loss of shape [batch] (use reduction='none'), got shape {tuple(loss.shape)}")
    trainer = module.trainer
    if not trainer.training:
        return loss.mean()
    batch = _curated_datamodule(trainer).batch
    if batch is None:
        raise RuntimeError("no curated batch is in flight: was the batch produced by CuratedDataModule's train loader?")
    if loss.shape[0] != batch.ids.shape[0]:
        raise ValueError(f"per-sample loss has {loss.shape[0]} entries but the batch holds {batch.ids.shape[0]} samples")
    plan_reduction = None
    for callback in trainer.callbacks:
        ledger = getattr(callback, "ledger", None)
        if getattr(callback, "records_losses", False) and ledger is not None:
            ledger.record(batch.ids, loss.detach().float(), None if logits is None else logits.detach(), targets)
            plan_reduction = plan_reduction or getattr(getattr(callback, "plan", None), "reduction", None)
    return weighted_loss(loss, batch.weights, reduction or plan_reduction or DEFAULT_REDUCTION)
