"""Run by test_sharded_ddp.py under torchrun (2 CPU ranks, gloo): ``sharded_train.py <index.json>
<out dir> <ledger mode> [<ledger mode> ...]`` trains the same curated run once per ledger mode
and writes ``<out>/<mode>/rank<r>.json``: the ledger's type, and per epoch the batch count and
the decision the snapshot holds at the epoch's end (kept ids, float16 weights, strength codes);
the trainer writes its checkpoint and the callback ``<out>/<mode>/curation_state.pt``.
"""

import json
import os
import sys

import lightning as L
import numpy as np
import torch
from torch import nn

from curated_loader import CuratedDataModule, CurationCallback
from curated_loader.curation import (
    AugmentStrength,
    CurationPlan,
    InfoBatchPrune,
    Reweight,
    ShardedLedger,
    SmallLossFilter,
)
from curated_loader.models import Classifier

EPOCHS, BATCH, WORKERS = 4, 8, 2
LOSS = "mean_loss"  # a pad sample may be recorded twice in an epoch: sums agree across ledger modes, EMAs need not


class DecisionRecorder(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        self.epochs: dict[int, dict] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs[trainer.current_epoch] = {"batches": 0}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs[trainer.current_epoch]["batches"] += 1
        ledger = next(c for c in trainer.callbacks if isinstance(c, CurationCallback)).ledger
        if batch_idx == 0 and isinstance(ledger, ShardedLedger):  # before the epoch's first record
            self.epochs[trainer.current_epoch]["buffer_entries_at_start"] = ledger.buffer_bytes // ledger.entry_bytes

    def on_train_epoch_end(self, trainer, pl_module):
        snap = trainer.datamodule.snapshot
        view = snap.view()
        self.epochs[trainer.current_epoch]["decision"] = {
            "keep": np.flatnonzero(view.keep).tolist(), "weight": view.weight.astype(float).tolist(),
            "strength": view.strength.codes.tolist(), "version": view.version,
        }

    def on_train_end(self, trainer, pl_module):
        curation = next(c for c in trainer.callbacks if isinstance(c, CurationCallback))
        with open(self.path, "w") as f:
            json.dump({"ledger": type(curation.ledger).__name__, "world": trainer.world_size,
                       "summary": curation.decision.summary(), "epochs": self.epochs}, f)


def train(index: str, out: str, mode: str) -> None:
    torch.manual_seed(0)
    os.makedirs(f"{out}/{mode}", exist_ok=True)
    plan = CurationPlan(
        noise_filter=SmallLossFilter(warmup_epochs=1, quantile=0.1, loss_key=LOSS),
        prune=InfoBatchPrune(ratio=0.5, loss_key=LOSS),
        reweight=Reweight(class_balance=True, loss_key=LOSS),
        augment=AugmentStrength(loss_key=LOSS),
        seed=0, num_epochs=EPOCHS + 2,
    )
    dm = CuratedDataModule(index, fields=("npy", "cls"), decode=(), batch_size=BATCH, num_workers=WORKERS, seed=0)
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=2, strategy="ddp", logger=False, default_root_dir=f"{out}/{mode}",
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[CurationCallback(plan, num_classes=10, ledger_mode=mode),
                   DecisionRecorder(f"{out}/{mode}/rank{int(os.environ['RANK'])}.json")],
    )
    trainer.fit(Classifier(net=nn.Sequential(nn.Flatten(), nn.Linear(4, 10)), lr=1e-2), dm)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for ledger_mode in sys.argv[3:]:
        train(sys.argv[1], sys.argv[2], ledger_mode)
    torch.distributed.destroy_process_group()  # as examples/train.py does; see docs/scale.md
