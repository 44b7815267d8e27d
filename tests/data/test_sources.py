"""Shards written by others stream through CuratedDataModule."""

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from curated_loader import CuratedDataModule

PEER = Path(__file__).resolve().parents[2].parent / "shared" / "peer-shards" / "webdataset-sample.tgz"
pytestmark = pytest.mark.timeout(120)


def train_batches(dm: CuratedDataModule):
    dm.setup("fit")
    return list(dm.train_dataloader())


@pytest.mark.skipif(not PEER.exists(), reason=f"{PEER} not present")
def test_peer_webdataset_shard(tmp_path):
    shard = tmp_path / "webdataset-sample.tgz"
    shutil.copy(PEER, shard)
    dm = CuratedDataModule(str(shard), fields=("png", "cls"), batch_size=32, num_workers=2)
    batches = train_batches(dm)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    ids = torch.cat([b[2] for b in batches])
    assert images.shape[1:] == (3, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert sorted(ids.tolist()) == list(range(90)) and labels.dtype == torch.int64
    assert set(labels.tolist()) <= set(range(10))


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_shardwriter_shards(tmp_path):
    with wds.ShardWriter(str(tmp_path / "sw-%06d.tar"), maxcount=7, verbose=0) as sink:
        for i in range(20):
            sink.write({"__key__": f"k{i:04d}", "png": _png(i), "cls": i % 3})
    dm = CuratedDataModule(str(tmp_path / "sw-*.tar"), fields=("png", "cls"), batch_size=6, decode=("torchl",))
    batches = train_batches(dm)
    images, labels, ids = (torch.cat([b[k] for b in batches]) for k in range(3))
    assert sorted(ids.tolist()) == list(range(20))
    values = (images.flatten(1)[:, 0] * 255).round().long()
    assert torch.equal(labels, values % 3)  # image and label of one sample stay together


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
def test_plain_tar_command_shards(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(9):
        (src / f"{i:03d}.png").write_bytes(_png(10 * i))
        (src / f"{i:03d}.cls").write_text(str(i % 2))
    subprocess.run(["tar", "-cf", str(tmp_path / "plain.tar"), "-C", str(src), *sorted(os.listdir(src))], check=True, timeout=60)
    dm = CuratedDataModule(str(tmp_path / "plain.tar"), fields=("png", "cls"), batch_size=4, decode=("torchl",))
    batches = train_batches(dm)
    labels = torch.cat([b[1] for b in batches])
    ids = torch.cat([b[2] for b in batches])
    assert sorted(ids.tolist()) == list(range(9))
    assert torch.equal(labels, ids % 2)
