"""Shards written by ShardTarWriter are byte for byte those webdataset's ShardWriter writes."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from webdataset import ShardWriter

from curated_loader.data.tarwrite import ShardTarWriter
from curated_loader.data.writer import write_arrays


def mixed_samples():
    """Member names, sizes and values that take the template path and each tarfile fallback."""
    yield {"__key__": "a", "npy": np.arange(40, dtype=np.float32), "cls": 3}
    yield {"__key__": "k" * 97, "txt": "a name of exactly 100 characters", "cls": 1}
    yield {"__key__": "k" * 120, "txt": "a name over 100 characters: a pax path record", "cls": 1}
    yield {"__key__": "é-ünï", "txt": "non-ASCII name", "json": {"x": [1, 2]}}
    yield {"__key__": "empty", "bin": b"", "cls": 0}
    yield {"__key__": "block", "bin": b"x" * 512, "_meta": "not written"}
    for i in range(40):
        yield {"__key__": f"{i:08d}", "npy": np.full(i * 7, i, dtype=np.float64), "cls": i % 10}


CLOCKS = {
    "fractional": [1764518400.123456789 + 0.37 * i for i in range(1000)],
    "whole float": [1700000000.0] * 1000,
    "int": [1700000000 + i for i in range(1000)],
    "small": [0.4] * 1000,
    "beyond the ustar field": [9e12] * 1000,
}


def _write(writer_type, folder: Path, clock: list[float], monkeypatch, **kw) -> dict[str, str]:
    ticks = iter(clock)
    monkeypatch.setattr(time, "time", lambda: next(ticks))
    folder.mkdir()
    with writer_type(str(folder / "s-%03d.tar"), maxcount=7, maxsize=4000, **kw) as sink:
        for sample in mixed_samples():
            sink.write(sample)
    monkeypatch.undo()
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("clock", CLOCKS)
def test_same_bytes_as_webdataset(tmp_path, monkeypatch, clock):
    ours = _write(ShardTarWriter, tmp_path / "ours", CLOCKS[clock], monkeypatch)
    theirs = _write(ShardWriter, tmp_path / "theirs", CLOCKS[clock], monkeypatch, verbose=0)
    assert len(theirs) > 3  # split by count and by size
    assert ours == theirs


def test_write_arrays_reads_back(tmp_path):
    x = np.random.default_rng(0).random((25, 40), dtype=np.float32)
    index = write_arrays(x, np.arange(25) % 10, tmp_path, samples_per_shard=10, progress=False)
    assert index.counts.tolist() == [10, 10, 5]  # write_samples checks this by scanning the shards
    got = list(wds.WebDataset(index.urls, shardshuffle=False).decode())
    assert [s["__key__"] for s in got] == [f"{i:08d}" for i in range(25)]
    np.testing.assert_array_equal(np.stack([s["npy"] for s in got]), x)
    assert [s["cls"] for s in got] == [i % 10 for i in range(25)]


def test_a_sample_without_key_or_bytes_is_refused(tmp_path):
    with ShardTarWriter(str(tmp_path / "s-%03d.tar")) as sink:
        with pytest.raises(ValueError, match="__key__"):
            sink.write({"cls": 1})
        with pytest.raises(ValueError, match="no handler found for xyz"):
            sink.write({"__key__": "a", "xyz": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["s-000.tar"]  # opened at start, as webdataset's


def test_an_owner_beyond_the_ustar_fields_is_written_by_tarfile(tmp_path, monkeypatch):
    owner = {"user": "ü" * 40, "group": "staff"}
    ours = _write(ShardTarWriter, tmp_path / "ours", CLOCKS["fractional"], monkeypatch, **owner)
    theirs = _write(ShardWriter, tmp_path / "theirs", CLOCKS["fractional"], monkeypatch, verbose=0, **owner)
    assert ours == theirs
