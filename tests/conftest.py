"""Shared fixtures: real tar shards on disk whose content encodes each sample's id."""

from __future__ import annotations

import io
import socket
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from curated_loader.data.writer import write_samples


def id_samples(sizes: Sequence[int], width: int = 4):
    """Samples whose ``npy`` array is ``[id, id, ...]`` and whose label is ``id % 10``."""
    sid = 0
    for size in sizes:
        for _ in range(size):
            yield {"__key__": f"s{sid:07d}", "npy": np.full(width, sid, dtype=np.float32), "cls": sid % 10}
            sid += 1


# Tiny models: one intra-op thread is several times faster on 2 shared cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def noisy_mnist1d(tmp_path_factory):
    """MNIST-1D, 20 000 samples: 16 000 train with 40% symmetric label noise, 4 000 clean test."""
    from curated_loader.datasets import write_noisy_mnist1d

    return write_noisy_mnist1d(tmp_path_factory.mktemp("mnist1d"), num_samples=20000, noise_rate=0.4, samples_per_shard=1000, progress=False)


def first_train_shards(shards, count: int) -> str:
    """A brace spec of the first ``count`` training shards of a ``write_noisy_mnist1d`` set:
    ids ``[0, count * shard size)``, the same ids (and noise mask entries) as in the full set.
    For tests that need real shards but not all of them."""
    return str(Path(shards.train_index).with_name(f"train-{{000000..{count - 1:06d}}}.tar"))


@pytest.fixture
def make_shards(tmp_path: Path):
    """Write shards of the given sizes (one shard per size); returns the index path."""

    def make(sizes: Sequence[int], name: str = "train") -> str:
        out = tmp_path / name
        urls, counts = [], []
        from curated_loader.data.shards import ShardIndex

        it = id_samples(sizes)
        from webdataset import TarWriter

        out.mkdir(parents=True, exist_ok=True)
        for i, size in enumerate(sizes):
            url = str(out / f"{name}-{i:06d}.tar")
            with TarWriter(url) as sink:
                for _ in range(size):
                    sink.write(next(it))
            urls.append(url)
            counts.append(size)
        index = ShardIndex(urls, np.asarray(counts), [Path(u).stat().st_size for u in urls])
        index.save(out / f"{name}-index.json")
        return str(out / f"{name}-index.json")

    return make


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


__all__ = ["add_member", "first_train_shards", "id_samples", "write_samples"]


@pytest.fixture(autouse=True, scope="session")
def _index_cache_in_tmp(tmp_path_factory):
    """Index caches of the suite go to a temporary folder, never the user's ~/.cache."""
    import os

    old = os.environ.get("CURATED_LOADER_CACHE")
    os.environ["CURATED_LOADER_CACHE"] = str(tmp_path_factory.mktemp("index-cache"))
    yield
    if old is None:
        os.environ.pop("CURATED_LOADER_CACHE", None)
    else:
        os.environ["CURATED_LOADER_CACHE"] = old


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for gloo/torchrun rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
