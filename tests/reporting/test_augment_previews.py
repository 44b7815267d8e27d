"""Augmentation previews of ``CurationMonitor``: a real W&B offline run holds them (read back
from its own files), each preview is exactly what the next epoch trains on (worker and device
path), and runs under other loggers skip them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from curated_loader import (
    CuratedDataModule,
    CurationCallback,
    write_arrays,
)
from curated_loader.augment import (
    AmplitudeScale,
    Compose,
    GaussianNoise,
    Shift,
    TimeStretch,
)
from curated_loader.curation import AugmentStrength, CurationPlan
from curated_loader.models import Classifier
from curated_loader.reporting import CurationMonitor
from curated_loader.reporting.monitor import (
    AUGMENT_PREVIEW_COLUMNS,
    _side_by_side,
    augment_preview_plot,
    preview_ids,
)

HERE = Path(__file__).resolve().parent
N = 1000


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


# the W&B run reader (and the train script it loads) of the offline-run test
offline = _load("curated_tests_wandb_offline_reader", HERE / "test_wandb_offline.py")


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    out = tmp_path_factory.mktemp("preview_signals")
    rng = np.random.default_rng(0)
    write_arrays(rng.standard_normal((N, 40)).astype(np.float32), rng.integers(0, 10, N), out, samples_per_shard=250,
                 progress=False)
    return str(out / "train-index.json")


def signal_augment():
    return Compose([Shift(max_shift=6, field="npy"), AmplitudeScale(a_max=0.3, field="npy"),
                    TimeStretch(s_max=0.2, field="npy"), GaussianNoise(sigma_max=0.2, field="npy")])


def strengths(n: int = N) -> torch.Tensor:
    s = torch.from_numpy(np.random.default_rng(1).random(n).astype(np.float32))
    s[:100] = 0.0
    return s


def datamodule(index: str, augment_on: str, **kw) -> CuratedDataModule:
    return CuratedDataModule(index, fields=("npy", "cls"), decode=(), batch_size=100, num_workers=0,
                             augment=signal_augment(), augment_on=augment_on, seed=11, **kw)


def delivered(dm: CuratedDataModule, epoch: int) -> dict[int, torch.Tensor]:
    """What the loader (and, on the device path, ``on_after_batch_transfer``) hands to
    ``training_step`` in ``epoch``, by sample id."""
    loader = dm.train_dataloader()
    loader.epoch_fn = None
    loader.set_epoch(epoch)
    out = {}
    for batch in loader:
        x, _ = dm.on_after_batch_transfer(batch, 0)
        for i, row in zip(dm.batch.ids.tolist(), x):
            out[i] = row
    return out


# -- each preview is what the next epoch trains on ---------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("augment_on", ["worker", "device"])
def test_previews_match_the_training_batches(signals, augment_on):
    dm = datamodule(signals, augment_on)
    dm.setup("fit")
    s = strengths()
    keep = torch.ones(N, dtype=torch.bool)
    keep[500:520] = False  # not trained on next epoch: never previewed
    dm.snapshot.publish(keep, None, s, version=3)  # the decision for epoch 3
    monitor = CurationMonitor(augment_previews=6)
    rows = monitor.augment_preview_rows(SimpleNamespace(datamodule=dm, current_epoch=2))
    assert [r["id"] for r in rows] == preview_ids(dm.snapshot.strength, keep, 6) and len(rows) == 6  # as published (uint8)
    assert all(set(AUGMENT_PREVIEW_COLUMNS[:-1]) <= set(r) for r in rows)
    assert all(r["epoch"] == 2 and r["for_epoch"] == 3 and r["path"] == augment_on for r in rows)
    assert [r["strength"] for r in rows] == sorted(r["strength"] for r in rows)  # weakest first
    assert rows[0]["strength"] == 0.0 and rows[-1]["strength"] == pytest.approx(float(s[keep].max()), abs=1 / 510)
    assert not any(500 <= r["id"] < 520 for r in rows)

    trained = delivered(dm, 3)
    for row in rows:
        sid = row["id"]
        assert torch.equal(torch.as_tensor(row["raw"]), torch.as_tensor(_shard_signal(dm, sid)))
        torch.testing.assert_close(torch.as_tensor(row["augmented"]), trained[sid], atol=1e-6, rtol=1e-6)
        if row["strength"] == 0.0:
            assert row["rel_change"] == 0.0 and torch.equal(torch.as_tensor(row["augmented"]), torch.as_tensor(row["raw"]))
        else:
            assert row["rel_change"] > 0.0

    # another epoch draws other parameters; no augmentation or no previews asked: no rows
    later = monitor.augment_preview_rows(SimpleNamespace(datamodule=dm, current_epoch=2), num=6)
    assert all(torch.equal(torch.as_tensor(a["augmented"]), torch.as_tensor(b["augmented"])) for a, b in zip(rows, later))
    dm.snapshot.publish(keep, None, s, version=4)
    moved = monitor.augment_preview_rows(SimpleNamespace(datamodule=dm, current_epoch=3))
    assert not torch.equal(torch.as_tensor(moved[-1]["augmented"]), torch.as_tensor(rows[-1]["augmented"]))
    assert CurationMonitor(augment_previews=0).augment_preview_rows(SimpleNamespace(datamodule=dm, current_epoch=2)) == []
    plain = CuratedDataModule(signals, fields=("npy", "cls"), decode=(), batch_size=100)
    plain.setup("fit")
    assert monitor.augment_preview_rows(SimpleNamespace(datamodule=plain, current_epoch=0)) == []


def _shard_signal(dm: CuratedDataModule, sid: int) -> np.ndarray:
    from curated_loader.data.tario import MemberReader

    index = dm.train_stream.index
    shards, positions = index.locate(np.asarray([sid]))
    reader = MemberReader()
    try:
        sample = dm.train_stream.decoder(reader.read(index.urls[int(shards[0])], index.layout(int(shards[0])), int(positions[0])))
    finally:
        reader.close()
    return np.asarray(sample["npy"])


def test_preview_ids_spread_over_the_strength_ranking():
    s = torch.tensor([0.9, 0.1, 0.5, 0.1, 0.7, 0.3])
    assert preview_ids(s, None, 3) == [1, 5, 0]  # weakest (ties by id), middle, strongest
    assert preview_ids(s, torch.tensor([False, True, True, True, True, True]), 2) == [1, 4]
    assert preview_ids(s, None, 1) == [0]
    assert preview_ids(s, None, 10) == [1, 3, 5, 2, 4, 0]
    assert preview_ids(s, None, 0) == []


def test_preview_pictures():
    rgb = augment_preview_plot(np.sin(np.arange(40) / 4), np.cos(np.arange(40) / 4), "id 3 strength 0.50")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[-1] == 3
    two_channels = augment_preview_plot(np.zeros((2, 40)), np.ones((2, 40)))
    assert two_channels.shape[-1] == 3
    image = torch.rand(3, 16, 12)
    pair = _side_by_side(image.numpy(), (image * 2).numpy())  # the augmented one brighter, out of [0, 1]
    assert pair.dtype == np.uint8 and pair.shape == (16, 12 + 4 + 12, 3)
    np.testing.assert_array_equal(pair[:, :12], (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert (pair[:, 16:] >= pair[:, :12]).all()  # clipped on the raw image's scale, not rescaled
    grey = _side_by_side(np.full((8, 8), 0.5, np.float32), np.full((10, 8), 1.0, np.float32))
    assert grey.shape == (10, 20, 3) and (grey[8:, :8] == 255).all()


def test_negative_preview_count_is_refused():
    with pytest.raises(ValueError, match="augment_previews"):
        CurationMonitor(augment_previews=-1)


# -- other loggers skip the previews --------------------------------------------------------------
@pytest.mark.timeout(120)
def test_other_loggers_skip_the_previews(signals, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger

    def refuse(*args, **kwargs):
        raise AssertionError("augmentation previews drawn without a WandbLogger")

    monkeypatch.setattr(CurationMonitor, "_augment_table", refuse)
    monitor = CurationMonitor(augment_previews=4)
    callback = CurationCallback(CurationPlan(augment=AugmentStrength(warmup_epochs=0)), num_classes=10)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback, monitor])
    trainer.fit(Classifier(), datamodule(signals, "device"))
    assert trainer.current_epoch == 2 and monitor.previews_logged == 0
    assert [h["curation/strength_mean"] > 0 for h in callback.history] == [True, True]
    assert monitor.state_dict()["previews_logged"] == 0


# -- a real W&B offline run -----------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_offline_run_has_augment_previews_and_strength_panels(tmp_path, monkeypatch):
    home = tmp_path / "wandb_home"
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    epochs, previews = 3, 4
    cfg = offline.train_script.compose_config([
        "dataset.num_samples=2000", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
        "torch_threads=1", "data.num_workers=0", "curation=adaptive_augment", "curation.augment.warmup_epochs=1",
        "augment=signal_default", "logger=wandb", "monitor.top_k=0",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'run'}",
    ])
    result = offline.train_script.train(cfg)
    run_dir = Path(result["wandb_run_dir"])
    run = offline.read_finished_run(run_dir)
    rows = run["history"]
    n = result["num_train_samples"]

    # the strength panels that were there before: mean strength per epoch and its histogram
    means = [r["curation/strength_mean"] for r in rows if "curation/strength_mean" in r]
    assert len(means) == epochs and all(0.0 < m < 1.0 for m in means)
    hists = [r["curation/hist/strength"] for r in rows if "curation/hist/strength" in r]
    assert len(hists) == epochs and all(h["_type"] == "histogram" and sum(h["values"]) == n for h in hists)

    # one preview table per epoch
    tables = [(r["curation/augment_previews"], r) for r in rows if "curation/augment_previews" in r]
    assert len(tables) == epochs
    for meta, _ in tables:
        assert meta["_type"] == "table-file" and meta["nrows"] == previews and meta["ncols"] == len(AUGMENT_PREVIEW_COLUMNS)
    for epoch, (meta, _) in enumerate(tables):
        content = json.loads((run_dir / "files" / meta["path"]).read_text())
        assert content["columns"] == list(AUGMENT_PREVIEW_COLUMNS)
        table = [dict(zip(content["columns"], row)) for row in content["data"]]
        assert [row["epoch"] for row in table] == [epoch] * previews
        assert all(row["for_epoch"] == epoch + 1 and row["path"] == "worker" for row in table)
        assert all(row["preview"] == "Image" and 0 <= row["id"] < n for row in table)
        s = [row["strength"] for row in table]
        assert s == sorted(s) and all(0.0 <= v <= 1.0 for v in s) and s[-1] > s[0]  # spread over the ranking
        for row in table:
            assert (row["rel_change"] > 0) == (row["strength"] > 0)

    # the pictures: each preview table's artifact carries one PNG per row
    artifacts = [a for a in run["artifacts"] if a["type"] == "run_table" and "augment_previews" in a["name"]]
    assert len(artifacts) == epochs
    images = {p: local for p, local in artifacts[-1]["files"].items() if p.startswith("media/images/")}
    assert len(images) == previews
    for local in images.values():
        assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
