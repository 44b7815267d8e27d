"""Small reference models for the demo, tests and benchmarks."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .checks import Range
from .lightning.loss import curated_loss


class Signal1DCNN(nn.Module):
    """The MNIST-1D paper's convolutional network (3 strided conv layers, ~5k parameters)."""

    def __init__(self, length: int = 40, channels: int = 25, num_classes: int = 10) -> None:
        super().__init__()
        for name, value, low in (("length", length, 8), ("channels", channels, 1), ("num_classes", num_classes, 2)):
            Range(low)(name, value)
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        with torch.no_grad():
            width = self.features(torch.zeros(1, 1, length)).numel()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


class Classifier(L.LightningModule):
    """A plain classifier whose only curation-specific line is its loss."""

    def __init__(self, net: nn.Module | None = None, lr: float = 1e-2, weight_decay: float = 0.0, num_classes: int = 10) -> None:
        super().__init__()
        Range(0.0, lo_open=True)("lr", lr)
        Range(0.0)("weight_decay", weight_decay)
        Range(2)("num_classes", num_classes)
        self.net = net if net is not None else Signal1DCNN(num_classes=num_classes)
        self.lr = lr
        self.weight_decay = weight_decay
        self.test_outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = curated_loss(self, F.cross_entropy(logits, y, reduction="none"), logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=True, batch_size=len(y))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
