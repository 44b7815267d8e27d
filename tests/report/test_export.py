"""Export of a curated dataset from a real short training run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from curated_loader import CuratedDataModule
from curated_loader.data.shards import load_index
from curated_loader.data.tario import scan_layout, stream_samples
from curated_loader.reporting.export import ExportError, export_curated

REPO = Path(__file__).resolve().parents[2]


def _sha256_files(folder: Path) -> dict[str, str]:
    """sha256 of every shard and index file in ``folder``."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.suffix in (".tar", ".json")
    }


def _read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _source_samples(index_path: Path) -> list[dict]:
    index = load_index(str(index_path))
    return [s for url in index.urls for s in stream_samples(url, lambda pos: True)]


def test_export_flagged_reconciles_and_leaves_sources_untouched(trained_run, tmp_path):
    before = _sha256_files(trained_run.shard_dir)
    state, flagged, pruned = trained_run.raw, trained_run.flagged, trained_run.pruned
    assert flagged and pruned, "the training fixture should flag and prune samples"

    result = export_curated(trained_run.checkpoint, str(trained_run.train_index), tmp_path / "out", progress=False)

    assert _sha256_files(trained_run.shard_dir) == before
    n = trained_run.num_train
    assert result.num_source == n
    assert result.num_removed == len(flagged)
    assert result.num_kept + result.num_removed == n
    assert result.removed_by_reason == {"flagged_small_loss": len(flagged)}
    index = load_index(str(result.index_path))
    assert index.num_samples == result.num_kept
    assert [scan_layout(u).nsamples for u in index.urls] == index.counts.tolist()

    # every removed sample is named with its reason; every pruned (still exported) one too
    manifest = _read_manifest(result.manifest_path)
    removed = {e["id"]: e for e in manifest if e["decision"] == "removed"}
    assert set(removed) == flagged
    assert all(e["reason"] == "flagged_small_loss" and e["epoch"] == state["decision"]["epoch"] for e in removed.values())
    assert {e["id"] for e in manifest if e["decision"] == "pruned"} == pruned
    weights = state["decision"]["weight"]
    for e in manifest:
        if e["decision"] == "reweighted":
            assert abs(weights[e["id"]].item() - 1.0) > 1e-6 and e["id"] not in flagged | pruned
        assert e["score"] == pytest.approx(state["decision"]["score"][e["id"]].item())

    # the exported samples are the kept ones, in source order, with byte-identical members
    source = _source_samples(trained_run.train_index)
    for e in manifest:
        assert source[e["id"]]["__key__"] == e["key"]
        assert os.path.basename(e["shard"]) == os.path.basename(source[e["id"]]["__url__"])
    exported = _source_samples(result.index_path)
    expected = [s for i, s in enumerate(source) if i not in flagged]
    assert len(exported) == len(expected) == result.num_kept
    for got, want in zip(exported, expected):
        assert got["__key__"] == want["__key__"]
        assert {k: v for k, v in got.items() if not k.startswith("__")} == {k: v for k, v in want.items() if not k.startswith("__")}


def test_exported_shards_load_through_datamodule(trained_run, tmp_path):
    result = export_curated(trained_run.checkpoint, str(trained_run.train_index), tmp_path / "out", progress=False)
    flagged = trained_run.flagged
    labels = trained_run.raw["ledger"]["tables"]["label"]
    expected_labels = torch.tensor([int(labels[i]) for i in range(trained_run.num_train) if i not in flagged])

    dm = CuratedDataModule(str(result.index_path), fields=("npy", "cls"), decode=(), batch_size=100, num_workers=0)
    dm.setup("fit")
    seen = []
    for x, y, ids, weights in dm.train_dataloader():
        assert x.shape[1:] == (40,)
        assert torch.equal(y, expected_labels[ids])
        seen.append(ids)
    ids = torch.cat(seen)
    assert sorted(ids.tolist()) == list(range(result.num_kept))


def test_export_drop_pruned_removes_both(trained_run, tmp_path):
    flagged, pruned = trained_run.flagged, trained_run.pruned
    result = export_curated(trained_run.checkpoint, str(trained_run.train_index), tmp_path / "out",
                            drop="pruned", samples_per_shard=300, progress=False)
    assert result.num_removed == len(flagged) + len(pruned)
    assert result.num_kept + result.num_removed == trained_run.num_train
    assert result.removed_by_reason == {"flagged_small_loss": len(flagged), "pruned": len(pruned)}
    manifest = _read_manifest(result.manifest_path)
    removed = {e["id"]: e["reason"] for e in manifest if e["decision"] == "removed"}
    assert removed == {**{i: "flagged_small_loss" for i in flagged}, **{i: "pruned" for i in pruned}}
    counts = load_index(str(result.index_path)).counts.tolist()
    assert all(c <= 300 for c in counts) and sum(counts) == result.num_kept


def test_export_refuses_to_touch_sources_or_an_earlier_export(trained_run, tmp_path):
    with pytest.raises(ExportError, match="source"):
        export_curated(trained_run.checkpoint, str(trained_run.train_index), trained_run.shard_dir, progress=False)
    out = tmp_path / "out"
    export_curated(trained_run.checkpoint, str(trained_run.train_index), out, progress=False)
    with pytest.raises(ExportError, match="already holds an export"):
        export_curated(trained_run.checkpoint, str(trained_run.train_index), out, progress=False)
    result = export_curated(trained_run.checkpoint, str(trained_run.train_index), out, drop="pruned",
                            samples_per_shard=2000, overwrite=True, progress=False)
    assert sorted(p.name for p in out.glob("train-*.tar")) == ["train-000000.tar"]
    assert load_index(str(result.index_path)).num_samples == result.num_kept


def test_export_keeps_samples_apart_when_keys_repeat_across_shards(tmp_path, make_checkpoint):
    """Shards whose keys restart at 0: after removals, equal keys may become neighbours in
    one output shard, where a tar reader would merge them into one sample."""
    from curated_loader.data.writer import write_samples

    src = tmp_path / "src"
    samples = [{"__key__": f"{i % 3:04d}", "npy": np.full(4, i, np.float32), "cls": i % 10} for i in range(6)]
    write_samples(samples, src, samples_per_shard=3, progress=False)  # keys 0000 0001 0002 | 0000 0001 0002
    reason = np.zeros(6, np.int8)
    reason[[0, 1, 3, 4]] = 2  # flagged: left are id 2 and id 5, both with key 0002
    ckpt = make_checkpoint(tmp_path / "hand.ckpt", np.arange(6) % 10, reason)
    result = export_curated(ckpt, str(src / "train-index.json"), tmp_path / "out", samples_per_shard=10, progress=False)
    assert result.num_kept == 2
    index = load_index(str(result.index_path))
    assert index.counts.tolist() == [1, 1]
    values = [np.load(io.BytesIO(s["npy"]))[0] for s in _source_samples(result.index_path)]
    assert values == [2, 5]


@pytest.mark.timeout(300)
def test_export_cli(trained_run, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "curated_loader.cli", "export", str(trained_run.checkpoint),
         "--shards", str(trained_run.train_index), "--out", str(out), "--drop", "pruned", "-q"],
        capture_output=True, text=True, cwd=REPO, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    removed = len(trained_run.flagged) + len(trained_run.pruned)
    n = trained_run.num_train
    assert f"{n - removed} kept + {removed} removed = {n} samples" in proc.stdout
    assert (out / "manifest.jsonl").exists() and (out / "train-index.json").exists()
    record = json.loads((out / "export.json").read_text())
    assert record["num_kept"] + record["num_removed"] == n and record["drop"] == "pruned"
