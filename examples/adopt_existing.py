"""Adding curation to an existing Lightning script: three changes, marked CHANGE 1-3.

    python examples/adopt_existing.py                  # makes small noisy MNIST-1D shards first
    python examples/adopt_existing.py --epochs 12 --data data/mnist1d_small

The model below is a conventional LightningModule. Without curation its training step would
end with ``loss = F.cross_entropy(logits, y)`` and the data would come from a plain
DataModule. The three changes:

1. the data module: ``CuratedDataModule(train_shards=..., fields=("npy", "cls"), ...)``;
2. the trainer: ``Trainer(callbacks=[CurationCallback(plan)])``;
3. the loss line: a per-sample loss (``reduction="none"``) through ``curated_loss``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from curated_loader import CuratedDataModule, CurationCallback, curated_loss
from curated_loader.curation import CurationPlan, GMMFilter, InfoBatchPrune


class LitConvNet(L.LightningModule):
    """A small 1-D conv net for 40-step signals; nothing curation-specific but its loss."""

    def __init__(self, channels: int = 32, num_classes: int = 10, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(channels * 5, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float().unsqueeze(1))

    def training_step(self, batch, batch_idx):
        x, y = batch  # unchanged: ids and weights never reach the step
        logits = self(x)
        # before: loss = F.cross_entropy(logits, y)
        loss = curated_loss(self, F.cross_entropy(logits, y, reduction="none"), logits, y)  # CHANGE 3
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self(x).argmax(-1) == y).float().mean()
        self.log("val/acc", acc, prog_bar=True, batch_size=len(y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        acc = (self(x).argmax(-1) == y).float().mean()
        self.log("test/acc", acc, batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/mnist1d_adopt", help="shard folder (made when missing)")
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this small model)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = Path(args.data)
    if not (data / "train-index.json").exists():
        from curated_loader.datasets import write_noisy_mnist1d

        write_noisy_mnist1d(data, num_samples=args.samples, noise_rate=0.4, progress=False)

    L.seed_everything(0, verbose=False)
    dm = CuratedDataModule(  # CHANGE 1 (was: a plain LightningDataModule)
        train_shards=str(data / "train-index.json"),
        val_shards=str(data / "test-index.json"),
        test_shards=str(data / "test-index.json"),
        fields=("npy", "cls"),
        batch_size=128,
        num_workers=args.workers,
    )
    plan = CurationPlan(noise_filter=GMMFilter(warmup_epochs=5), prune=InfoBatchPrune(ratio=0.3, warmup_epochs=6))
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[CurationCallback(plan)],  # CHANGE 2
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = LitConvNet()
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    curation = trainer.callbacks[0]
    last = curation.history[-1]
    print(f"test accuracy {result['test/acc']:.3f}; next epoch keeps {last['curation/kept_frac']:.1%} of the "
          f"samples ({int(last['curation/flagged'])} flagged as mislabeled, {int(last['curation/pruned'])} pruned)")
    return {"test_acc": float(result["test/acc"]), **last}


if __name__ == "__main__":
    main()
