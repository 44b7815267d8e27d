"""Synthetic ledgers with planted label noise, fed through ``Ledger.record``, for the tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from curated_loader.curation import Ledger


@dataclass
class Planted:
    ledger: Ledger
    noisy: torch.Tensor  # bool[N]: label was flipped
    labels: torch.Tensor  # int64[N]: the (possibly wrong) recorded label


def build_planted(
    num_samples: int = 1000,
    num_classes: int = 5,
    noise_frac: float = 0.1,
    epochs: int = 4,
    batch: int = 100,
    unseen: int = 0,
    seed: int = 0,
) -> Planted:
    """Clean samples: the model is confident in the assigned label. Noisy samples: the model
    is consistently confident in another class. The last ``unseen`` ids are never recorded."""
    g = torch.Generator().manual_seed(seed)
    n = num_samples
    labels = torch.randint(num_classes, (n,), generator=g)
    noisy = torch.zeros(n, dtype=torch.bool)
    noisy[torch.randperm(n - unseen, generator=g)[: int(noise_frac * n)]] = True
    preferred = torch.where(noisy, (labels + 1) % num_classes, labels)
    ledger = Ledger(n, num_classes=num_classes)
    recorded = n - unseen
    for epoch in range(epochs):
        ledger.set_epoch(epoch)
        order = torch.randperm(recorded, generator=g)
        for start in range(0, recorded, batch):
            ids = order[start : start + batch]
            logits = torch.randn(len(ids), num_classes, generator=g)
            logits[torch.arange(len(ids)), preferred[ids]] += 4.0 + 0.5 * epoch
            loss = F.cross_entropy(logits, labels[ids], reduction="none")
            ledger.record(ids, loss, logits, labels[ids])
        ledger.sync()
    return Planted(ledger, noisy, labels)
