import json
import os
import subprocess
import sys

import numpy as np
import pytest

from curated_loader.data import shards as shards_module
from curated_loader.data.shards import (
    INDEX_KIND,
    ShardIndex,
    build_index,
    expand_urls,
    load_index,
)


def test_expand_brace_glob_and_list(make_shards, tmp_path):
    index_path = make_shards([3, 5, 2])
    folder = os.path.dirname(index_path)
    brace = expand_urls(f"{folder}/train-{{000000..000002}}.tar")
    glob = expand_urls(f"{folder}/train-*.tar")
    listed = expand_urls([f"{folder}/train-000000.tar", f"file:{folder}/train-000001.tar"])
    assert brace == glob == [f"{folder}/train-{i:06d}.tar" for i in range(3)]
    assert listed[1].startswith("file:")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_urls(f"{folder}/nothing-*.tar")


def test_index_counts_ids_and_wids_format(make_shards):
    index_path = make_shards([3, 5, 0, 2])
    data = json.load(open(index_path))
    assert data["__kind__"] == INDEX_KIND and data["wids_version"] == 1
    assert [e["nsamples"] for e in data["shardlist"]] == [3, 5, 0, 2]
    assert not os.path.isabs(data["shardlist"][0]["url"])  # relative to the index, as wids resolves them
    index = load_index(index_path)
    assert index.num_samples == 10
    np.testing.assert_array_equal(index.offsets, [0, 3, 8, 8, 10])
    shard, pos = index.locate(np.array([0, 2, 3, 7, 8, 9]))
    np.testing.assert_array_equal(shard, [0, 0, 1, 1, 3, 3])
    np.testing.assert_array_equal(pos, [0, 2, 0, 4, 0, 1])


def test_cache_goes_to_the_cache_folder_and_relative_specs_hit_it(make_shards, tmp_path, monkeypatch):
    folder = os.path.dirname(make_shards([4, 6]))
    monkeypatch.delenv("CURATED_LOADER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = sorted(os.listdir(folder))
    monkeypatch.chdir(folder)
    index = load_index("train-{000000..000001}.tar")
    assert list(index.counts) == [4, 6] and index.urls == ["train-000000.tar", "train-000001.tar"]
    assert sorted(os.listdir(folder)) == before  # nothing written beside the shards
    caches = os.listdir(tmp_path / "xdg" / "curated_loader")
    assert len(caches) == 1 and caches[0].startswith("index-")

    def no_scan(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(shards_module, "build_index", no_scan)
    monkeypatch.chdir(os.path.dirname(folder))  # same shards, spec relative to another folder
    again = load_index(f"{os.path.basename(folder)}/train-{{000000..000001}}.tar")
    assert list(again.counts) == [4, 6] and again.urls[0] == f"{os.path.basename(folder)}/train-000000.tar"
    assert list(again.counts) == list(load_index(f"{folder}/train-*.tar").counts)  # absolute spec: same cache
    monkeypatch.setenv("CURATED_LOADER_CACHE", str(tmp_path / "env-cache"))  # the env variable moves it
    monkeypatch.setattr(shards_module, "build_index", build_index)
    load_index(f"{folder}/train-*.tar")
    assert len(os.listdir(tmp_path / "env-cache")) == 1
    load_index(f"{folder}/train-*.tar", cache_dir=tmp_path / "arg-cache")  # and the argument beats both
    assert len(os.listdir(tmp_path / "arg-cache")) == 1 and sorted(os.listdir(folder)) == before


def test_changed_shard_invalidates_index(make_shards, tmp_path):
    index_path = make_shards([4, 6])
    shard = load_index(index_path).urls[1]
    with open(shard, "ab") as f:
        f.write(b"\0" * 1024)
    with pytest.raises(Exception, match="train-000001.tar.*rebuild"):
        load_index(index_path)


def test_cli_index_writes_index(make_shards, tmp_path):
    folder = os.path.dirname(make_shards([2, 3]))
    out = tmp_path / "idx.json"
    result = subprocess.run(
        [sys.executable, "-m", "curated_loader.cli", "index", f"{folder}/train-{{000000..000001}}.tar", "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 shards, 5 samples" in result.stdout
    assert ShardIndex.from_json(json.load(open(out)), base=str(tmp_path)).num_samples == 5


def test_build_index_counts_samples_of_a_url_list(make_shards):
    index_path = make_shards([3])
    url = load_index(index_path).urls[0]
    assert build_index([url], progress=False).num_samples == 3
