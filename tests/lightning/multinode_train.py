"""Run by test_multinode.py under torchrun, once per "node": one rank per node, gloo on the CPU.

``multinode_train.py <index.json> <out dir> <mode> [<mode> ...]`` trains a small model with a
noise filter and pruning for each mode, then writes ``<out>/<mode>/rank<global rank>.json``:
per epoch the ids each batch held, the ids the snapshot kept, the pad ids the epoch plan
added to this rank, and the decision published at the epoch's end.
"""

import json
import os
import sys

import lightning as L
import numpy as np
import torch
from torch import nn

from curated_loader import CuratedDataModule, CurationCallback
from curated_loader.curation import CurationPlan, InfoBatchPrune, SmallLossFilter
from curated_loader.data.epoch import multiplicity, pad_ids, plan_epoch
from curated_loader.models import Classifier

EPOCHS = 3
BATCH = 8
WORKERS = 2


class RankRecorder(L.Callback):
    """What this rank delivered and decided, epoch by epoch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.epochs: dict[int, dict] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        stream = trainer.datamodule.train_stream
        view = stream.snapshot.view()
        epoch = trainer.current_epoch
        mult = multiplicity(view, stream.seed, epoch, stream.resample)
        pads: list[int] = []
        for worker in range(WORKERS):
            plan = plan_epoch(stream.index, mult, seed=stream.seed, epoch=epoch, rank=stream.rank, world_size=stream.world_size,
                              worker=worker, num_workers=WORKERS, batch_size=BATCH, mode=stream.mode, shuffle=stream.shuffle)
            count = plan.share.pad_batches * BATCH
            pads += pad_ids(stream.index, mult, plan, count, seed=stream.seed, epoch=epoch, rank=stream.rank, worker=worker).tolist()
        self.epochs[epoch] = {"ids": [], "batches": 0, "kept": np.flatnonzero(view.keep).tolist(), "pad": pads,
                              "rank": stream.rank, "world": stream.world_size}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        record = self.epochs[trainer.current_epoch]
        record["ids"] += trainer.datamodule.batch.ids.tolist()
        record["batches"] += 1

    def on_train_epoch_end(self, trainer, pl_module):
        snap = trainer.datamodule.snapshot
        self.epochs[trainer.current_epoch]["decision"] = {
            "keep": np.flatnonzero(snap.keep.numpy()).tolist(), "weight": snap.weight.tolist(), "version": snap.version,
        }

    def on_train_end(self, trainer, pl_module):
        env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE")}
        with open(self.path, "w") as f:
            json.dump({"global_rank": trainer.global_rank, "node_rank": trainer.node_rank, "local_rank": trainer.local_rank,
                       "world_size": trainer.world_size, "env": env, "epochs": self.epochs}, f)


def train(index: str, out: str, mode: str) -> None:
    torch.manual_seed(0)
    os.makedirs(f"{out}/{mode}", exist_ok=True)
    plan = CurationPlan(noise_filter=SmallLossFilter(warmup_epochs=1, quantile=0.2), prune=InfoBatchPrune(ratio=0.5),
                        seed=0, num_epochs=EPOCHS)
    dm = CuratedDataModule(index, fields=("npy", "cls"), decode=(), batch_size=BATCH, num_workers=WORKERS, mode=mode, seed=0)
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, num_nodes=2, strategy="ddp",
        default_root_dir=f"{out}/{mode}", logger=L.pytorch.loggers.CSVLogger(f"{out}/{mode}", name="logs"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[CurationCallback(plan, num_classes=10), RankRecorder(f"{out}/{mode}/rank{int(os.environ['RANK'])}.json")],
    )
    trainer.fit(Classifier(net=nn.Sequential(nn.Flatten(), nn.Linear(4, 10)), lr=1e-2), dm)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for mode in sys.argv[3:]:
        train(sys.argv[1], sys.argv[2], mode)
