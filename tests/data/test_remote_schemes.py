"""Object-store style URLs go through fsspec (here its in-memory filesystem, standing in for
s3:// or gcs://); a scheme nobody knows is a ShardError naming the URL."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from curated_loader.data.errors import ShardError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.shards import load_index
from curated_loader.data.writer import write_samples
from tests.conftest import id_samples

TOTAL, PER_SHARD = 26, 10  # shards of 10, 10 and 6 samples


@pytest.fixture
def memory_shards(tmp_path: Path):
    """The same shards on disk and in fsspec's memory filesystem (inherited by forked workers)."""
    local = write_samples(id_samples([TOTAL]), tmp_path / "shards", samples_per_shard=PER_SHARD, progress=False)
    fs = fsspec.filesystem("memory")
    root = f"memory://shards-{uuid.uuid4().hex}"
    urls = []
    for url in local.urls:
        remote = f"{root}/{Path(url).name}"
        fs.pipe(remote, Path(url).read_bytes())
        urls.append(remote)
    yield local, urls
    fs.rm(root, recursive=True)


@pytest.mark.timeout(120)
def test_fsspec_urls_stream_the_same_samples_through_workers(memory_shards, tmp_path):
    local, urls = memory_shards
    kw = {"fields": ("npy", "cls"), "decode": (), "batch_size": 4, "cache_dir": tmp_path / "cache"}
    remote = CuratedStream(urls, **kw)
    assert remote.index.counts.tolist() == local.counts.tolist() == [10, 10, 6]

    def batches(stream):
        return [(b[2].tolist(), b[0][:, 0].int().tolist()) for b in CuratedLoader(stream, num_workers=2)]

    got = batches(remote)
    assert got == batches(CuratedStream(list(local.urls), **kw))
    assert sorted(i for ids, _ in got for i in ids) == list(range(TOTAL))


def test_unknown_scheme_names_the_url(tmp_path):
    url = "nosuchscheme://bucket/train-000000.tar"
    with pytest.raises(ShardError, match=r"nosuchscheme://bucket/train-000000\.tar: unknown URL scheme 'nosuchscheme'"):
        load_index([url], cache_dir=tmp_path / "cache")
