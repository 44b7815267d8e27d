"""pipe: URLs read from an index file never run unless the user opts in; typed ones do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curated_loader import CuratedDataModule, cli
from curated_loader.data.errors import UnsafeURLError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.shards import ALLOW_PIPE_ENV, load_index
from curated_loader.data.writer import write_samples
from tests.conftest import id_samples
from tests.report.conftest import _make_checkpoint

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def pipe_index(tmp_path):
    """An index JSON whose urls are shell commands that leave a marker file, then cat a real shard."""
    index = write_samples(id_samples([4, 3]), tmp_path / "src", samples_per_shard=4, progress=False)
    marker = tmp_path / "ran"

    def make(scheme: str = "pipe:") -> tuple[Path, Path]:
        doc = index.to_json()
        for entry, url in zip(doc["shardlist"], index.urls):
            entry["url"] = f"{scheme}touch {marker} && cat {url}"
            entry.pop("filesize", None)
        path = tmp_path / "shared-index.json"
        path.write_text(json.dumps(doc))
        return path, marker

    return make


@pytest.mark.parametrize("scheme", ["pipe:", "PIPE:", " pipe:"])
def test_index_file_pipe_urls_are_refused_unless_allowed(pipe_index, scheme, monkeypatch):
    path, marker = pipe_index(scheme)
    monkeypatch.delenv(ALLOW_PIPE_ENV, raising=False)
    with pytest.raises(UnsafeURLError, match=r"touch .*shared-index\.json lists a pipe: URL.*allow_pipe=True, --allow-pipe or CURATED_LOADER_ALLOW_PIPE=1"):
        load_index(str(path))
    with pytest.raises(UnsafeURLError):
        CuratedStream(str(path))
    with pytest.raises(UnsafeURLError):
        CuratedDataModule(str(path)).setup("fit")
    monkeypatch.setenv(ALLOW_PIPE_ENV, "1")
    with pytest.raises(UnsafeURLError):  # an explicit False beats the environment
        load_index(str(path), allow_pipe=False)
    assert not marker.exists()


def test_opted_in_pipe_urls_stream_through_workers(pipe_index, monkeypatch):
    path, marker = pipe_index()
    monkeypatch.delenv(ALLOW_PIPE_ENV, raising=False)
    ds = CuratedStream(str(path), fields=("npy", "cls"), batch_size=2, decode=(), allow_pipe=True)
    ids = sorted(int(i) for b in CuratedLoader(ds, num_workers=2) for i in b[2])
    assert ids == list(range(7)) and marker.exists()
    monkeypatch.setenv(ALLOW_PIPE_ENV, "1")
    assert load_index(str(path)).num_samples == 7


def test_typed_pipe_specs_keep_working(tmp_path, monkeypatch):
    index = write_samples(id_samples([3]), tmp_path / "src", progress=False)
    monkeypatch.delenv(ALLOW_PIPE_ENV, raising=False)
    assert load_index([f"pipe:cat {index.urls[0]}"]).num_samples == 3


def test_cli_refuses_index_pipe_urls_without_allow_pipe(pipe_index, tmp_path, monkeypatch, capsys):
    path, marker = pipe_index()
    monkeypatch.delenv(ALLOW_PIPE_ENV, raising=False)  # also undoes what --allow-pipe sets below
    ckpt = _make_checkpoint(tmp_path / "run.ckpt", np.arange(7) % 10, np.zeros(7, np.int8))
    for args in (["index", str(path), "-o", str(tmp_path / "re.json")],
                 ["report", str(ckpt), "--shards", str(path), "--out", str(tmp_path / "report"), "-q"],
                 ["export", str(ckpt), "--shards", str(path), "--out", str(tmp_path / "export"), "-q"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--allow-pipe" in err and "shared-index.json" in err, err
        assert not marker.exists()
    assert cli.main(["index", str(path), "-o", str(tmp_path / "re.json"), "-q", "--allow-pipe"]) == 0
    assert "2 shards, 7 samples" in capsys.readouterr().out
    assert cli.main(["export", str(ckpt), "--shards", str(path), "--out", str(tmp_path / "export"), "-q", "--allow-pipe"]) == 0
    assert "7 kept" in capsys.readouterr().out and marker.exists()
