"""One curated training run for the resume tests, in-process or as a script.

A run records, per epoch, the sample ids of every batch in order, the snapshot the epoch
was read with (keep/weight/strength at its first batch) and every epoch-end ``Decision``,
so that a resumed run can be compared with an uninterrupted one field by field.

As a script (``PYTHONPATH=. python tests/lightning/resume_run.py SHARDS OUT --workers 2 ...``) it writes
the record to ``OUT/record.pt``; ``--hang-at-step N`` makes it stop at step N (after that
step's checkpoint) and wait to be killed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from curated_loader import CuratedDataModule, CurationCallback
from curated_loader.curation import CurationPlan, InfoBatchPrune, SmallLossFilter
from curated_loader.models import Classifier

EPOCHS = 4
BATCH = 32
DECISION_FIELDS = ("keep", "weight", "strength", "reason", "score")


class RunRecord(L.Callback):
    """What a training run read and decided, epoch by epoch."""

    def __init__(self) -> None:
        self.batches: dict[int, list[list[int]]] = {}
        self.snapshots: dict[int, dict[str, np.ndarray]] = {}
        self.decisions: dict[int, dict[str, np.ndarray]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch, dm = trainer.current_epoch, trainer.datamodule
        if epoch not in self.snapshots:
            view = dm.snapshot.view()
            self.snapshots[epoch] = {name: np.array(getattr(view, name), copy=True) for name in ("keep", "weight", "strength")}
        self.batches.setdefault(epoch, []).append(dm.batch.ids.tolist())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        decision = next(c for c in trainer.callbacks if isinstance(c, CurationCallback)).decision
        self.decisions[trainer.current_epoch] = {f: getattr(decision, f).cpu().numpy().copy() for f in DECISION_FIELDS}

    def state(self) -> dict:
        return {"batches": self.batches, "snapshots": self.snapshots, "decisions": self.decisions}


class HangAtStep(L.Callback):
    """Stop at a global step (after its checkpoints are written), say so in a file, and wait."""

    def __init__(self, step: int, marker: Path) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(600)


def train(
    shards: str, ckpt_dir: str | Path, *, workers: int, mode: str, ckpt_path: str | Path | None = None,
    checkpoints: tuple[ModelCheckpoint, ...] | None = None, extra: tuple[L.Callback, ...] = (),
) -> RunRecord:
    """A seeded 4-epoch run (small-loss filter + InfoBatch pruning 0.5) that writes a step
    checkpoint after every batch and one at every epoch end unless ``checkpoints`` are given."""
    torch.manual_seed(0)
    plan = CurationPlan(noise_filter=SmallLossFilter(warmup_epochs=1, quantile=0.3), prune=InfoBatchPrune(ratio=0.5), seed=0)
    if checkpoints is None:
        checkpoints = (
            ModelCheckpoint(dirpath=ckpt_dir, filename="step-{step}", auto_insert_metric_name=False, every_n_train_steps=1, save_top_k=-1),
            ModelCheckpoint(dirpath=ckpt_dir, filename="epoch-{epoch}", auto_insert_metric_name=False, every_n_epochs=1,
                            save_top_k=-1, save_on_train_epoch_end=True),
        )
    record = RunRecord()
    dm = CuratedDataModule(shards, fields=("npy", "cls"), decode=(), batch_size=BATCH, num_workers=workers, mode=mode, seed=3)
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[CurationCallback(plan, num_classes=10), record, *checkpoints, *extra], limit_val_batches=0, deterministic=True,
    )
    trainer.fit(Classifier(), dm, ckpt_path=ckpt_path)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shards")
    parser.add_argument("out")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", default="stream")
    parser.add_argument("--ckpt-path")
    parser.add_argument("--save-every", type=int, default=4, help="last.ckpt every this many steps")
    parser.add_argument("--hang-at-step", type=int)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    last = ModelCheckpoint(dirpath=out / "ckpts", save_last=True, every_n_train_steps=args.save_every, save_top_k=0)
    extra = (HangAtStep(args.hang_at_step, out / "hanging"),) if args.hang_at_step else ()
    record = train(args.shards, out / "ckpts", workers=args.workers, mode=args.mode, ckpt_path=args.ckpt_path, checkpoints=(last,), extra=extra)
    torch.save(record.state(), out / "record.pt")


if __name__ == "__main__":
    main()
