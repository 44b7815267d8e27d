"""Fixtures for report/export tests: one real short training run per session, and small
hand-built checkpoints for cases a short run cannot produce. Tests reach everything through
fixtures (test modules here are imported by basename, so they import nothing from here)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from curated_loader.curation import Decision, Ledger, Reason

FLAGGED = [int(r) for r in Reason if r.flagged]


@dataclass(frozen=True)
class TrainedRun:
    checkpoint: Path
    train_index: Path
    shard_dir: Path
    num_train: int
    raw: dict  # the CurationCallback state, read with torch.load only
    flagged: frozenset[int]  # ids whose latest reason is a noise-filter flag
    pruned: frozenset[int]  # ids pruned by the latest decision


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """MNIST-1D (1600 training samples, 40% symmetric label noise, 4 shards) trained for 3
    epochs with a small-loss noise filter and InfoBatch pruning; the checkpoint is written
    by ``trainer.save_checkpoint`` after fit."""
    pytest.importorskip("mnist1d")
    import lightning as L

    from curated_loader import CuratedDataModule, CurationCallback
    from curated_loader.curation import CurationPlan, InfoBatchPrune, SmallLossFilter
    from curated_loader.datasets import write_noisy_mnist1d
    from curated_loader.models import Classifier

    root = tmp_path_factory.mktemp("curated_run")
    shards = write_noisy_mnist1d(root / "data", num_samples=2000, samples_per_shard=400, progress=False)
    torch.manual_seed(0)
    dm = CuratedDataModule(shards.train_index, fields=("npy", "cls"), decode=(), batch_size=64, num_workers=0, seed=0)
    plan = CurationPlan(
        noise_filter=SmallLossFilter(quantile=0.3, warmup_epochs=1),
        prune=InfoBatchPrune(ratio=0.5, warmup_epochs=1, cooldown_fraction=0.0),
    )
    trainer = L.Trainer(
        max_epochs=3, callbacks=[CurationCallback(plan)], accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Classifier(), datamodule=dm)
    checkpoint = root / "run.ckpt"
    trainer.save_checkpoint(checkpoint)
    raw = raw_curation_state(checkpoint)
    reason = raw["decision"]["reason"]
    return TrainedRun(checkpoint, Path(shards.train_index), root / "data", 1600, raw,
                      frozenset(flagged_ids(reason)), frozenset(pruned_ids(reason)))


def raw_curation_state(checkpoint: Path) -> dict:
    """The CurationCallback state read straight from the checkpoint (no project code)."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    states = [v for k, v in ckpt["callbacks"].items() if k.startswith("CurationCallback")]
    assert len(states) == 1
    return states[0]


def flagged_ids(reason: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isin(reason.long(), torch.tensor(FLAGGED))).flatten().tolist())


def pruned_ids(reason: torch.Tensor) -> set[int]:
    return set(torch.nonzero(reason.long() == int(Reason.PRUNED)).flatten().tolist())


def _make_checkpoint(
    path: Path,
    labels: np.ndarray,
    reason: np.ndarray | None,
    *,
    history: list[dict] | None = None,
    epoch: int = 3,
    score: np.ndarray | None = None,
    shards: str | None = None,
) -> Path:
    """A checkpoint in Lightning's layout holding a real ledger (one recorded pass with
    logits) and a decision with the given per-sample ``reason`` codes (``None``: no
    decision yet) and ``score`` (default: the recorded loss). With ``shards`` (a spec) it
    records their fingerprints, as the callback does."""
    n = len(labels)
    gen = torch.Generator().manual_seed(0)
    ledger = Ledger(n, num_classes=10)
    targets = torch.as_tensor(labels, dtype=torch.long)
    logits = torch.randn(n, 10, generator=gen)
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    ledger.set_epoch(0)
    ledger.record(torch.arange(n), loss, logits, targets)
    ledger.sync()
    decision = None
    if reason is not None:
        codes = torch.as_tensor(reason, dtype=torch.int8)
        keep = (codes == int(Reason.KEPT)) | (codes == int(Reason.UNSEEN))
        scores = loss.clone() if score is None else torch.as_tensor(score, dtype=torch.float32)
        decision = Decision(keep, keep.float(), torch.zeros(n), codes, scores, epoch).state_dict()
    state = {"ledger": ledger.state_dict(), "decision": decision, "plan": {"seed": 0, "num_epochs": epoch},
             "history": history or []}
    if shards is not None:
        from curated_loader.data.shards import load_index
        from curated_loader.lightning.run_record import shard_record

        state["shards"] = shard_record(load_index(shards))
    ckpt = {"epoch": epoch - 1, "global_step": 10, "state_dict": {},
            "callbacks": {"CurationCallback{'seed': 0, 'num_classes': None, 'ema': 0.9}": state},
            "CuratedDataModule": {"seed": 0, "epoch": epoch - 1, "batches_done": 1, "mode": "stream"}}
    torch.save(ckpt, path)
    return path


@pytest.fixture
def make_checkpoint():
    """``make_checkpoint(path, labels, reason, history=None, epoch=3, score=None, shards=None)``:
    see :func:`_make_checkpoint`."""
    return _make_checkpoint
