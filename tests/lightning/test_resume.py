"""Resume at an epoch boundary or mid-epoch: same decisions, exactly the missing samples."""

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from curated_loader import CuratedDataModule, CurationCallback
from curated_loader.curation import CurationPlan, InfoBatchPrune, SmallLossFilter
from curated_loader.models import Classifier

from .recorders import IdRecorder

pytestmark = pytest.mark.timeout(300)
EPOCHS = 4
BATCH = 256


def run(paths, ckpt_dir, ckpt_path=None, workers=0):
    torch.manual_seed(0)
    plan = CurationPlan(noise_filter=SmallLossFilter(warmup_epochs=1, quantile=0.3), prune=InfoBatchPrune(ratio=0.5), seed=0)
    recorder = IdRecorder()
    callbacks = [
        CurationCallback(plan, num_classes=10),
        recorder,
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", every_n_train_steps=20, save_top_k=-1),
        ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch}", every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True),
    ]
    dm = CuratedDataModule(paths.train_index, fields=("npy", "cls"), decode=(), batch_size=BATCH, num_workers=workers, seed=3)
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, limit_val_batches=0, deterministic=True,
    )
    trainer.fit(Classifier(), dm, ckpt_path=ckpt_path)
    return recorder


@pytest.fixture(scope="module")
def uninterrupted(noisy_mnist1d, tmp_path_factory):
    """Uninterrupted runs (with their checkpoints), one per worker count, made on first use."""
    runs = {}

    def get(workers):
        if workers not in runs:
            ckpts = tmp_path_factory.mktemp(f"ckpts{workers}")
            runs[workers] = run(noisy_mnist1d, ckpts, workers=workers), ckpts
        return runs[workers]

    return get


def test_resume_at_epoch_boundary(noisy_mnist1d, uninterrupted, tmp_path):
    full, ckpts = uninterrupted(0)
    resumed = run(noisy_mnist1d, tmp_path, ckpt_path=ckpts / "epochepoch=1.ckpt")
    for epoch in (2, 3):
        np.testing.assert_array_equal(resumed.keeps[epoch], full.keeps[epoch])
        assert resumed.ids[epoch] == full.ids[epoch]
    assert (~full.keeps[2]).sum() > 0  # curation was acting


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_delivers_exactly_the_remainder(noisy_mnist1d, uninterrupted, tmp_path, workers):
    full, ckpts = uninterrupted(workers)
    # a step checkpoint inside epoch 2 (pruned epochs are shorter than full ones)
    start_of_2 = len(full.batches[0]) + len(full.batches[1])
    step = next(s for s in range(20, 400, 20) if start_of_2 < s < start_of_2 + len(full.batches[2]))
    resumed = run(noisy_mnist1d, tmp_path, ckpt_path=ckpts / f"stepstep={step}.ckpt", workers=workers)
    done = step - start_of_2
    delivered_before = sum(full.batches[2][:done], [])
    assert resumed.batches[2] == full.batches[2][done:]  # none lost, none repeated, same order
    assert sorted(delivered_before + resumed.ids[2]) == sorted(full.ids[2])
    for epoch in (2, 3):
        np.testing.assert_array_equal(resumed.keeps[epoch], full.keeps[epoch])
