"""A real Trainer on real noisy shards: the callback drops mostly noisy samples."""

import weakref

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from curated_loader import CuratedDataModule, CurationCallback, curated_loss
from curated_loader.curation import CurationPlan, GMMFilter
from curated_loader.models import Signal1DCNN

from tests.conftest import first_train_shards

from .recorders import IdRecorder

pytestmark = pytest.mark.timeout(300)


class PlainModule(L.LightningModule):
    """Written as any Lightning user would; only the loss line knows about curation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Signal1DCNN()

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return curated_loss(self, F.cross_entropy(logits, y, reduction="none"), logits, y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def trainer(callbacks, epochs, **kw):
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **kw,
    )


def datamodule(paths, **kw):
    kw.setdefault("batch_size", 256)
    return CuratedDataModule(paths.train_index, fields=("npy", "cls"), decode=(), **kw)


WARMUP = 8


def test_drop_after_warmup_is_mostly_noise(noisy_mnist1d):
    torch.manual_seed(0)
    noise = np.load(noisy_mnist1d.noise_mask)
    plan = CurationPlan(noise_filter=GMMFilter(warmup_epochs=WARMUP, loss_key="mean_loss"), seed=0)
    callback = CurationCallback(plan, num_classes=10)
    recorder = IdRecorder()
    trainer([callback, recorder], WARMUP + 1).fit(PlainModule(), datamodule(noisy_mnist1d, num_workers=2, persistent_workers=True))
    dropped = ~recorder.keeps[WARMUP - 1]
    assert recorder.keeps[WARMUP - 2].all()  # nothing dropped during the warm-up
    assert dropped.sum() > 0.5 * noise.sum()
    precision = noise[dropped].mean()
    assert precision >= 0.8, f"precision of the drop {precision:.3f} (dropped {dropped.sum()})"
    # the next epoch trained on exactly what the decision kept
    assert sorted(recorder.ids[WARMUP]) == np.flatnonzero(recorder.keeps[WARMUP - 1]).tolist()


def test_persistent_workers_deliver_what_the_last_decision_kept(noisy_mnist1d):
    plan = CurationPlan(noise_filter=GMMFilter(warmup_epochs=1), seed=0)
    callback = CurationCallback(plan, num_classes=10)
    recorder = IdRecorder()
    dm = CuratedDataModule(first_train_shards(noisy_mnist1d, 4), fields=("npy", "cls"), decode=(), batch_size=256,
                           num_workers=2, persistent_workers=True)
    trainer([callback, recorder], 3, limit_val_batches=0).fit(PlainModule(), dm)
    for epoch in range(1, 3):
        expected = np.flatnonzero(recorder.keeps[epoch - 1]).tolist()
        assert sorted(recorder.ids[epoch]) == expected, f"epoch {epoch}"
    assert any((~k).any() for k in recorder.keeps.values())


class StatsLifetime(L.Callback):
    """Whether the statistics an epoch end decided from are still alive at the next epoch's
    later batches (after the ledger has recorded some of them)."""

    def __init__(self) -> None:
        self.previous: weakref.ref | None = None
        self.alive_during_epoch: dict[int, bool] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        curation = next(c for c in trainer.callbacks if isinstance(c, CurationCallback))
        assert curation.stats is not None and curation.stats.ema_loss.numel() > 0  # readable at the epoch end
        self.previous = weakref.ref(curation.stats)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 2 and self.previous is not None:
            self.alive_during_epoch[trainer.current_epoch] = self.previous() is not None


def test_an_epoch_end_statistics_are_not_held_while_the_next_epoch_records(noisy_mnist1d):
    # held, the ledger would compute every unread statistic before recording (46 B per sample)
    plan = CurationPlan(noise_filter=GMMFilter(warmup_epochs=0), seed=0)
    lifetime = StatsLifetime()
    dm = CuratedDataModule(first_train_shards(noisy_mnist1d, 4), fields=("npy", "cls"), decode=(), batch_size=128,
                           num_workers=2)
    trainer([CurationCallback(plan, num_classes=10), lifetime], 3, limit_val_batches=0).fit(PlainModule(), dm)
    assert lifetime.alive_during_epoch == {1: False, 2: False}


def test_reducer_rejects_a_reduced_or_misaligned_loss(noisy_mnist1d):
    class Reduced(PlainModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return curated_loss(self, F.cross_entropy(self.net(x), y))

    with pytest.raises(ValueError, match="per-sample loss"):
        trainer([CurationCallback()], 1, limit_train_batches=1).fit(Reduced(), datamodule(noisy_mnist1d))

    class Misaligned(PlainModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return curated_loss(self, F.cross_entropy(self.net(x), y, reduction="none")[:-1])

    with pytest.raises(ValueError, match="batch holds"):
        trainer([CurationCallback()], 1, limit_train_batches=1).fit(Misaligned(), datamodule(noisy_mnist1d))


def test_weighted_mean_uses_the_batch_weights(noisy_mnist1d):
    seen = []

    class Probe(PlainModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y, reduction="none")
            reduced = curated_loss(self, loss)
            w = self.trainer.datamodule.batch.weights
            seen.append(torch.allclose(reduced, (w * loss).sum() / w.sum()))
            return reduced

    dm = datamodule(noisy_mnist1d)
    dm.setup("fit")
    n = dm.train_stream.num_samples
    dm.snapshot.publish(torch.ones(n, dtype=torch.bool), torch.linspace(0.1, 3.0, n), version=0)
    trainer([CurationCallback()], 1, limit_train_batches=3).fit(Probe(), dm)
    assert seen and all(seen)


class ManualModule(PlainModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.optimizers()
        logits = self.net(x)
        loss = curated_loss(self, F.cross_entropy(logits, y, reduction="none"), logits, y)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


@pytest.mark.parametrize(
    "module, trainer_kw",
    [
        (PlainModule, {"accumulate_grad_batches": 2}),
        (PlainModule, {"precision": "bf16-mixed"}),
        (ManualModule, {}),
    ],
    ids=["grad-accumulation", "bf16-mixed", "manual-optimization"],
)
def test_reducer_under_training_variants(noisy_mnist1d, module, trainer_kw):
    callback = CurationCallback(num_classes=10)
    recorder = IdRecorder()
    trainer([callback, recorder], 1, limit_train_batches=6, **trainer_kw).fit(module(), datamodule(noisy_mnist1d))
    counts = callback.ledger.table("count")
    seen = torch.tensor(recorder.ids[0])
    assert int(counts.sum()) == len(seen) == 6 * 256  # every delivered sample recorded exactly once
    assert torch.equal(counts[seen], torch.ones(len(seen), dtype=counts.dtype))
    assert bool(torch.isfinite(callback.ledger.table("loss_sum")[seen]).all())
