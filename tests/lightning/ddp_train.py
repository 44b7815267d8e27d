"""Run by test_ddp.py as a script: Lightning re-launches it once per rank (2 CPU ranks, gloo)."""

import json
import sys

import lightning as L
import torch

from curated_loader import CuratedDataModule, CurationCallback
from curated_loader.curation import CurationPlan, SmallLossFilter
from curated_loader.models import Classifier


class RankRecorder(L.Callback):
    """Per rank: batches per epoch, and a digest of each published decision."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.batches: dict[int, int] = {}
        self.decisions: dict[int, list] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches[trainer.current_epoch] = self.batches.get(trainer.current_epoch, 0) + 1

    def on_train_epoch_end(self, trainer, pl_module):
        snap = trainer.datamodule.snapshot
        self.decisions[trainer.current_epoch] = [int(snap.keep.sum()), float(snap.weight.double().sum()), snap.keep.nonzero().flatten().tolist()]

    def on_train_end(self, trainer, pl_module):
        with open(f"{self.out}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"batches": self.batches, "decisions": self.decisions, "world": trainer.world_size}, f)


def main(train_index: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    plan = CurationPlan(noise_filter=SmallLossFilter(warmup_epochs=1, quantile=0.7), seed=0)
    dm = CuratedDataModule(train_index, fields=("npy", "cls"), decode=(), batch_size=128, num_workers=1)
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[CurationCallback(plan, num_classes=10), RankRecorder(out)],
    )
    trainer.fit(Classifier(), dm)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
