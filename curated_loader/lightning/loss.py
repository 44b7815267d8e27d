"""The per-sample loss reducer: the one call a ``training_step`` makes."""

from __future__ import annotations

import lightning as L
import torch

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
) -> torch.Tensor:
    """Record a batch's per-sample ``loss`` (``reduction="none"``) and return its weighted mean.

    During training the losses (and, when given, ``logits`` [B, C] with ``targets`` [B]) go
    into the :class:`~curated_loader.CurationCallback`'s ledger under the batch's sample ids,
    and the result is ``Σ w·ℓ / Σ w`` with the batch's curation weights. Outside training
    (validation, test) it is the plain mean. Nothing here waits for the device.
    """
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
    for callback in trainer.callbacks:
        ledger = getattr(callback, "ledger", None)
        if getattr(callback, "records_losses", False) and ledger is not None:
            ledger.record(batch.ids, loss.detach().float(), None if logits is None else logits.detach(), targets)
    weights = batch.weights.to(device=loss.device, dtype=loss.dtype)
    return (weights * loss).sum() / weights.sum().clamp_min(torch.finfo(loss.dtype).tiny)
