"""Bad input to report/export: clear errors that name what is wrong."""

from __future__ import annotations

import shutil

import pytest
import torch

from curated_loader.cli import main
from curated_loader.reporting.checkpoint import CheckpointError, load_curation_state
from curated_loader.reporting.export import export_curated
from curated_loader.reporting.report import write_report


def test_missing_checkpoint(trained_run, tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    for call in (write_report, export_curated):
        with pytest.raises(FileNotFoundError, match=f"checkpoint {missing} does not exist"):
            call(missing, str(trained_run.train_index), tmp_path / "out", progress=False)
    for command in ("report", "export"):
        assert main([command, str(missing), "--shards", str(trained_run.train_index), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"curated-loader {command}: error: checkpoint {missing} does not exist" in err
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_checkpoint_without_curation_state(trained_run, tmp_path, capsys):
    ckpt = torch.load(trained_run.checkpoint, map_location="cpu", weights_only=True)
    ckpt["callbacks"] = {k: v for k, v in ckpt["callbacks"].items() if not k.startswith("CurationCallback")}
    plain = tmp_path / "plain.ckpt"
    torch.save(ckpt, plain)
    with pytest.raises(CheckpointError, match=f"no CurationCallback state in ckpt {plain}"):
        export_curated(plain, str(trained_run.train_index), tmp_path / "out", progress=False)
    assert main(["report", str(plain), "--shards", str(trained_run.train_index), "--out", str(tmp_path / "r")]) == 2
    assert f"no CurationCallback state in ckpt {plain}" in capsys.readouterr().err

    # a callback that had not set up yet saves an empty state
    ckpt["callbacks"]["CurationCallback{'seed': 0}"] = {}
    torch.save(ckpt, plain)
    with pytest.raises(CheckpointError, match="no CurationCallback state in ckpt .*no ledger yet"):
        load_curation_state(plain)

    weights_only = tmp_path / "weights.ckpt"
    torch.save({"state_dict": ckpt["state_dict"]}, weights_only)
    with pytest.raises(CheckpointError, match=f"no CurationCallback state in ckpt {weights_only}"):
        load_curation_state(weights_only)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{junk} is not a readable torch checkpoint"):
        load_curation_state(junk)


def test_shards_with_another_sample_count(trained_run, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(trained_run.shard_dir / "train-000000.tar", one / "train-000000.tar")  # 400 of 1600 samples
    spec = str(one / "train-000000.tar")
    for call in (write_report, export_curated):
        with pytest.raises(CheckpointError, match=r"hold 400 samples but the ledger in checkpoint .* has 1600"):
            call(trained_run.checkpoint, spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert main(["export", str(trained_run.checkpoint), "--shards", spec, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "400" in err and "1600" in err and "Traceback" not in err
