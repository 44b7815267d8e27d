"""Callbacks that record what a real training run saw, for assertions."""

from __future__ import annotations

import lightning as L
import numpy as np


class IdRecorder(L.Callback):
    """Sample ids of every training batch, per epoch, and each epoch's published decision."""

    def __init__(self) -> None:
        self.ids: dict[int, list[int]] = {}
        self.batches: dict[int, list[list[int]]] = {}
        self.keeps: dict[int, np.ndarray] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ids = trainer.datamodule.batch.ids.tolist()
        self.ids.setdefault(trainer.current_epoch, []).extend(ids)
        self.batches.setdefault(trainer.current_epoch, []).append(ids)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.keeps[trainer.current_epoch] = trainer.datamodule.snapshot.keep.numpy().copy()
