"""Writing shards from arrays, pairs and image folders; reading them back, also via pipe: URLs."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from curated_loader import CuratedLoader, CuratedStream, write_arrays, write_image_folder
from curated_loader.data.noise import inject_label_noise
from curated_loader.data.shards import load_index

pytestmark = pytest.mark.timeout(120)


def test_arrays_round_trip_with_index(tmp_path):
    x = np.arange(250 * 3, dtype=np.float32).reshape(250, 3)
    y = np.arange(250) % 7
    index = write_arrays(x, y, tmp_path, samples_per_shard=100, progress=False)
    assert list(index.counts) == [100, 100, 50]
    stream = CuratedStream(str(tmp_path / "train-index.json"), fields=("npy", "cls"), decode=(), batch_size=32)
    for xb, yb, ids, _ in CuratedLoader(stream):
        assert torch.equal(xb, torch.from_numpy(x[ids.numpy()])) and torch.equal(yb, torch.from_numpy(y[ids.numpy()]))


def test_image_folder_and_cli_write(tmp_path):
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4, 3), 40 * label + i, np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    index, classes = write_image_folder(tmp_path / "imgs", tmp_path / "shards", progress=False)
    assert classes == ["cat", "dog"] and index.num_samples == 6
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 2), np.float32), y=np.arange(5))
    result = subprocess.run([sys.executable, "-m", "curated_loader.cli", "write", "--npz", str(tmp_path / "d.npz"), "--out", str(tmp_path / "cli")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert load_index(str(tmp_path / "cli" / "train-index.json")).num_samples == 5


def test_pipe_urls_stream(make_shards, tmp_path):
    urls = load_index(make_shards([5, 7])).urls
    stream = CuratedStream([f"pipe:cat {u}" for u in urls], fields=("npy", "cls"), decode=(), batch_size=4, cache_dir=tmp_path / "cache")
    ids = torch.cat([b[2] for b in CuratedLoader(stream)])
    assert sorted(ids.tolist()) == list(range(12))


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_label_noise_is_exact_and_seeded(kind):
    labels = np.arange(1000) % 10
    noisy, mask = inject_label_noise(labels, 0.3, num_classes=10, kind=kind, seed=4)
    assert mask.sum() == 300 and (noisy[mask] != labels[mask]).all() and (noisy[~mask] == labels[~mask]).all()
    if kind == "pairflip":
        assert ((labels[mask] + 1) % 10 == noisy[mask]).all()
    again, mask2 = inject_label_noise(labels, 0.3, num_classes=10, kind=kind, seed=4)
    assert (again == noisy).all() and (mask2 == mask).all()
