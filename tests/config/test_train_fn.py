"""``train(cfg)`` end to end on CPU: real shards, a real Trainer, the CSV logger; the CLI with a sweep."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curated_loader.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _load_train_script():
    spec = importlib.util.spec_from_file_location("curated_examples_train", ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("curated_examples_train", module)
    spec.loader.exec_module(module)
    return module


train_script = _load_train_script()

FAST = [
    "dataset.num_samples=2000", "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "torch_threads=1",
    "data.batch_size=100",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "mnist1d_shards"


@pytest.mark.timeout(300)
def test_train_end_to_end(tmp_path, data_dir):
    """Every policy on (warm-ups shortened), strength-aware augmentation, one loader worker."""
    out = tmp_path / "run"
    cfg = train_script.compose_config([
        *FAST, "curation=full", "augment=signal_default", "logger=csv", "data.num_workers=1",
        "curation.noise_filter.warmup_epochs=1", "curation.prune.warmup_epochs=1", "curation.reweight.warmup_epochs=1",
        "curation.augment.warmup_epochs=1", "monitor.top_k=5", f"paths.data_dir={data_dir}", f"paths.output_dir={out}",
    ])
    result = train_script.train(cfg)

    n = 1600  # 80% of dataset.num_samples
    assert result["num_train_samples"] == n
    assert 0.0 <= result["test_acc"] <= 1.0 and result["test_loss"] > 0
    assert [e["epoch"] for e in result["epochs"]] == [0.0, 1.0, 2.0]
    assert all(0.0 <= e["val_acc"] <= 1.0 for e in result["epochs"])
    # epoch 0 reads everything; later epochs skip flagged and pruned samples
    passes = [e["sample_passes"] for e in result["epochs"]]
    assert passes[0] == n and passes[-1] == result["sample_passes"] < 3 * n
    history = result["curation_history"]  # the decision made at the end of each epoch, for the next
    assert len(history) == 3
    assert history[0]["curation/flagged"] > 0 and history[0]["curation/kept_frac"] < 1.0
    assert history[0]["curation/strength_mean"] > 0  # the augment policy set strengths
    det = result["detection"]
    assert det is not None and det["filter_active"] == 1.0 and det["noisy"] == 640
    for key in ("precision", "recall", "f1", "auroc"):
        assert 0.0 <= det[key] <= 1.0
    assert len(result["detection_history"]) == 3
    assert result["tables_logged"] == 0 and result["wandb_run_dir"] is None  # W&B extras skipped under CSV
    ps = result["per_sample"]
    assert ps["ema_loss"].shape == ps["flagged"].shape == ps["noise_mask"].shape == (n,)
    assert int(ps["flagged"].sum()) == int(history[-1]["curation/flagged"])

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["test_acc"] == pytest.approx(result["test_acc"]) and "per_sample" not in summary
    rows = list(csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v not in ("", None)}
    assert {"curation/kept_frac", "curation/detect_auroc", "curation/detect_precision", "val/acc", "test/acc"} <= logged
    assert (data_dir / "mnist1d_n2000_symmetric0.4_s0" / "noise_mask.npy").exists()


def test_ensure_shards_once_and_checked(tmp_path, data_dir):
    cfg = train_script.compose_config([*FAST, f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}"])
    target = train_script.ensure_shards(cfg.dataset)
    assert target is not None and (target / "train-index.json").exists()
    stamp = (target / "train-000000.tar").stat().st_mtime_ns
    assert train_script.ensure_shards(cfg.dataset) == target
    assert (target / "train-000000.tar").stat().st_mtime_ns == stamp  # not rewritten
    mask = np.load(target / "noise_mask.npy")
    assert mask.shape == (1600,) and mask.sum() == 640
    cfg.dataset.dir = str(target)
    cfg.dataset.noise_rate = 0.2
    with pytest.raises(ConfigError, match="dataset.dir"):
        train_script.ensure_shards(cfg.dataset)
    cfg.dataset.dir = str(tmp_path / "absent")
    cfg.dataset.make_if_missing = False
    with pytest.raises(ConfigError, match="make_if_missing"):
        train_script.ensure_shards(cfg.dataset)


@pytest.mark.timeout(300)
def test_cli_multirun_sweep(tmp_path, data_dir):
    """``python examples/train.py -m curation=none,noise_filter`` runs one job per choice."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, str(ROOT / "examples" / "train.py"), "-m", "curation=none,noise_filter",
        "dataset.num_samples=2000", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "torch_threads=1",
        "data.num_workers=0", "logger=none", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}",
    ]
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = sorted(sweep.glob("*/metrics.json"))
    names = [m.parent.name for m in metrics]
    assert len(names) == 2 and names[0].startswith("0_curation=none,") and names[1].startswith("1_curation=noise_filter,")
    for path in metrics:
        summary = json.loads(path.read_text())
        assert 0.0 <= summary["test_acc"] <= 1.0 and summary["epochs_run"] == 2
    assert proc.stdout.count("test accuracy:") == 2
