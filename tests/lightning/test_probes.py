"""Probes in a real Trainer with 2 loader workers: flagged samples come back with weight 0,
are recorded in the ledger (so their statistics move), and add nothing to the gradient."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from curated_loader import CuratedDataModule, CurationCallback, curated_loss
from curated_loader.curation import CurationPlan, NoisePart, Policy, Reason
from curated_loader.models import Signal1DCNN
from tests.conftest import first_train_shards

pytestmark = pytest.mark.timeout(300)
FLAGGED = 2000  # ids below this are flagged from epoch 1 on


def flag_low_ids(stats, epoch, generator=None, *, keep=None) -> NoisePart:
    flagged = torch.arange(stats.num_samples, device=stats.device) < FLAGGED
    return NoisePart(flagged, flagged.float(), Reason.FLAGGED_SMALL_LOSS)


@dataclass(frozen=True, kw_only=True)
class FlagLowIds(Policy):
    warmup_epochs: int = 1
    function = staticmethod(flag_low_ids)


class Recording(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = Signal1DCNN()
        self.seen: dict[int, list[tuple[list[int], list[float]]]] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        context = self.trainer.datamodule.batch
        self.seen.setdefault(self.current_epoch, []).append((context.ids.tolist(), context.weights.tolist()))
        logits = self.net(x)
        return curated_loss(self, F.cross_entropy(logits, y, reduction="none"), logits, y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_flagged_samples_are_probed_with_weight_zero_and_recorded(noisy_mnist1d):
    plan = CurationPlan(noise_filter=FlagLowIds(), seed=0, probe_every=2, probe_fraction=0.02)
    callback = CurationCallback(plan, num_classes=10)
    dm = CuratedDataModule(first_train_shards(noisy_mnist1d, 4), fields=("npy", "cls"), decode=(), batch_size=256,
                           num_workers=2, persistent_workers=True)
    module = Recording()
    L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[callback]).fit(module, dm)
    n = dm.train_stream.num_samples
    weight_of = {e: {i: w for ids, ws in batches for i, w in zip(ids, ws)} for e, batches in module.seen.items()}
    probed_2 = [i for i, w in weight_of[2].items() if i < FLAGGED]
    assert 0 < len(probed_2) <= 0.02 * n  # epoch 2 probes a bounded share of the flagged ids ...
    assert all(weight_of[2][i] == 0.0 for i in probed_2)  # ... with weight 0
    assert not [i for i in weight_of[1] if i < FLAGGED]  # epoch 1 is not a probe epoch
    assert all(w > 0 for i, w in weight_of[2].items() if i >= FLAGGED)
    count = callback.ledger.table("count")
    assert all(int(count[i]) == 2 for i in probed_2)  # epoch 0 and the probe: their statistics move
    assert callback.history[-2]["curation/probed"] == len(probed_2)
