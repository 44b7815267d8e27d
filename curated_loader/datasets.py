"""Small real datasets made locally (never downloaded), written as noisy shards."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.noise import NoiseKind, inject_label_noise
from .data.writer import write_arrays


def make_mnist1d(num_samples: int = 20000, seed: int = 42, test_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """Generate MNIST-1D locally with the ``mnist1d`` package (no download).

    Returns float32 signals of shape [n, 40] and int64 labels: ``x, y, x_test, y_test``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    args.train_split = 1.0 - test_fraction
    state = np.random.get_state()  # make_dataset seeds numpy's global generator
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {
        "x": data["x"].astype(np.float32), "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32), "y_test": data["y_test"].astype(np.int64),
    }


@dataclass(frozen=True)
class NoisyShards:
    """Paths of a written noisy dataset. ``noise_mask`` is for evaluation only."""

    train_index: str
    test_index: str
    noise_mask: str
    meta: str


def write_noisy_mnist1d(
    out_dir: str | os.PathLike,
    *,
    num_samples: int = 20000,
    noise_rate: float = 0.4,
    noise_kind: NoiseKind = "symmetric",
    seed: int = 0,
    samples_per_shard: int = 1000,
    progress: bool = True,
) -> NoisyShards:
    """MNIST-1D → ``train-*.tar`` with injected label noise, clean ``test-*.tar``, and the
    true noise mask in ``noise_mask.npy`` (kept apart from the shards)."""
    out = Path(out_dir)
    data = make_mnist1d(num_samples, seed=42 + seed)
    noisy, mask = inject_label_noise(data["y"], noise_rate, num_classes=10, kind=noise_kind, seed=seed, features=data["x"])
    write_arrays(data["x"], noisy, out, prefix="train", samples_per_shard=samples_per_shard, progress=progress)
    write_arrays(data["x_test"], data["y_test"], out, prefix="test", samples_per_shard=samples_per_shard, progress=progress)
    np.save(out / "noise_mask.npy", mask)
    np.save(out / "clean_labels.npy", data["y"])
    meta = {"dataset": "mnist1d", "num_train": int(len(noisy)), "num_test": int(len(data["y_test"])),
            "noise_rate": noise_rate, "noise_kind": noise_kind, "seed": seed, "num_classes": 10}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return NoisyShards(str(out / "train-index.json"), str(out / "test-index.json"), str(out / "noise_mask.npy"), str(out / "meta.json"))
