"""Provenance is checked, not assumed: report/export refuse shards in another order or with
other content, and an index goes stale when a shard is missing or changed in place."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from curated_loader.cli import main
from curated_loader.data.errors import ShardError
from curated_loader.data.shards import build_index, load_index
from curated_loader.reporting.checkpoint import CheckpointError
from curated_loader.reporting.export import export_curated
from curated_loader.reporting.report import write_report


def _error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_reordered_shards_are_refused_naming_the_first_mismatch(trained_run, tmp_path, capsys):
    urls = load_index(str(trained_run.train_index)).urls
    swapped = [urls[0], urls[2], urls[1], urls[3]]
    for command in ("export", "report"):
        out = tmp_path / command
        assert main([command, str(trained_run.checkpoint), "--shards", *swapped, "--out", str(out), "-q"]) == 2
        line = _error(capsys.readouterr().err)
        assert f"shard 1 ({urls[2]}) has other members" in line and os.path.basename(urls[1]) in line, line
        assert not out.exists()
    with pytest.raises(CheckpointError, match="not the shards checkpoint .* was trained on"):
        export_curated(trained_run.checkpoint, swapped, tmp_path / "o", progress=False)

    # the same shards, copied elsewhere (new paths, new modification times), are accepted
    copy = tmp_path / "copy"
    copy.mkdir()
    for url in urls:
        shutil.copy(url, copy / os.path.basename(url))
    result = export_curated(trained_run.checkpoint, [str(copy / os.path.basename(u)) for u in urls],
                            tmp_path / "from-copy", progress=False)
    assert result.num_removed == len(trained_run.flagged)


def _tar_command_shards(folder: Path, sizes: list[int]) -> list[str]:
    """Shards made by the ``tar`` command from files ``<key>.npy`` / ``<key>.cls``; keys
    restart in every shard, so the shards' member lists are identical."""
    urls = []
    for s, size in enumerate(sizes):
        src = folder / f"files{s}"
        src.mkdir(parents=True)
        names = []
        for i in range(size):
            np.save(src / f"k{i:03d}.npy", np.full(4, 100 * s + i, np.float32))
            (src / f"k{i:03d}.cls").write_text(str(i % 10))
            names += [f"k{i:03d}.npy", f"k{i:03d}.cls"]
        url = folder / f"tarcmd-{s:06d}.tar"
        subprocess.run(["tar", "cf", str(url), *names], cwd=src, check=True, timeout=60)
        urls.append(str(url))
    return urls


def test_tar_command_shards_with_identical_members_reordered(tmp_path, make_checkpoint):
    urls = _tar_command_shards(tmp_path / "src", [5, 5, 5])
    with tarfile.open(urls[0]) as tf:
        assert tf.getnames()[:2] == ["k000.npy", "k000.cls"]
    build_index(urls, progress=False).save(tmp_path / "src" / "tarcmd-index.json")
    index_json = str(tmp_path / "src" / "tarcmd-index.json")
    reason = np.zeros(15, np.int8)
    reason[[1, 7]] = 3
    ckpt = make_checkpoint(tmp_path / "run.ckpt", np.arange(15) % 10, reason, shards=index_json)

    result = export_curated(ckpt, index_json, tmp_path / "ok", progress=False)  # training order: fine
    assert (result.num_kept, result.num_removed) == (13, 2)
    with pytest.raises(CheckpointError, match=r"shard 0 \(.*tarcmd-000002\.tar\) stands where the run had tarcmd-000000\.tar"):
        export_curated(ckpt, [urls[2], urls[1], urls[0]], tmp_path / "bad", progress=False)
    with pytest.raises(CheckpointError, match=r"hold 10 samples but the ledger .* has 15"):
        write_report(ckpt, [urls[0], urls[1]], tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError, match=r"shard 1 \(.*tarcmd-000002\.tar\) is not the run's shard 1 \(tarcmd-000001\.tar\)"):
        write_report(ckpt, [urls[0], urls[2], urls[2]], tmp_path / "r", progress=False)


def _edit_label_in_place(shard: str, key: str) -> None:
    """Change the one-byte ``cls`` member of ``key`` to another digit: same size, same headers."""
    with tarfile.open(shard) as tf:
        member = tf.getmember(f"{key}.cls")
        offset, old = member.offset_data, tf.extractfile(member).read()
    assert len(old) == 1
    stat = os.stat(shard)
    with open(shard, "r+b") as f:
        f.seek(offset)
        f.write(str((int(old) + 1) % 10).encode())
    # a later edit: make sure the file system's clock shows it even at a coarse timestamp granularity
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert os.path.getsize(shard) == stat.st_size


def test_same_size_edit_makes_the_index_stale(tmp_path, capsys):
    from curated_loader.data.writer import write_arrays

    index = write_arrays(np.zeros((12, 4), np.float32), np.arange(12) % 10, tmp_path / "d", samples_per_shard=4, progress=False)
    index_json = tmp_path / "d" / "train-index.json"
    assert load_index(str(index_json)).num_samples == 12  # fresh
    _edit_label_in_place(index.urls[1], "00000005")
    with pytest.raises(ShardError, match=r"train-000001\.tar: the shard was modified \(same size.*rebuild the index"):
        load_index(str(index_json))
    assert main(["report", "x.ckpt", "--shards", str(index_json), "--out", str(tmp_path / "r")]) == 2
    assert "checkpoint x.ckpt does not exist" in _error(capsys.readouterr().err)  # checkpoint first

    # a spec that is not an index JSON: the cached index is rebuilt, not reused
    spec = f"{tmp_path / 'd'}/train-{{000000..000002}}.tar"
    cache = tmp_path / "cache"
    first = load_index(spec, cache_dir=cache)
    _edit_label_in_place(index.urls[2], "00000009")
    again = load_index(spec, cache_dir=cache)
    assert again.fingerprints[2].mtime_ns != first.fingerprints[2].mtime_ns
    assert again.fingerprints[2].members == first.fingerprints[2].members  # same member list


def test_missing_shard_makes_the_index_stale(tmp_path, capsys):
    from curated_loader.data.writer import write_arrays

    index = write_arrays(np.zeros((8, 4), np.float32), np.arange(8), tmp_path / "d", samples_per_shard=4, progress=False)
    os.remove(index.urls[0])
    with pytest.raises(ShardError, match=r"train-000000\.tar: the shard was deleted or moved since the index"):
        load_index(str(tmp_path / "d" / "train-index.json"))
    # the command line reports it as an input error (exit code 2, no traceback: an uncaught
    # exception would fail this call)
    assert main(["index", str(tmp_path / "d" / "train-index.json"), "-o", str(tmp_path / "i.json")]) == 2
    assert "train-000000.tar" in capsys.readouterr().err


def test_export_writes_no_index_cache_beside_the_sources(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATED_LOADER_CACHE", str(tmp_path / "cache"))
    before = sorted(os.listdir(trained_run.shard_dir))
    spec = f"{trained_run.shard_dir}/train-{{000000..000003}}.tar"
    result = export_curated(trained_run.checkpoint, spec, tmp_path / "out", progress=False)
    write_report(trained_run.checkpoint, spec, tmp_path / "report", top_k=2, progress=False)
    assert result.num_removed == len(trained_run.flagged)
    assert sorted(os.listdir(trained_run.shard_dir)) == before
    assert any(p.name.startswith("index-") and p.suffix == ".json" for p in (tmp_path / "cache").iterdir())
