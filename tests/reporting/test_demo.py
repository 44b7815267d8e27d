"""The demo's fast mode runs end to end and writes its plot, table and W&B offline runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_demo():
    sys.path.insert(0, str(ROOT / "examples"))
    spec = importlib.util.spec_from_file_location("curated_examples_demo", ROOT / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
def test_demo_fast(tmp_path, monkeypatch, capsys):
    home = tmp_path / "wandb_home"
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    demo = _load_demo()
    out = tmp_path / "demo"
    # the demo's own data and epochs; two loader workers instead of one (the training step waits
    # for the single worker most of the time); 4 rows in the W&B table of suspicious samples
    # instead of 20 (each row draws a preview plot)
    summary = demo.main(["--out", str(out), "--fast", "data.num_workers=2", "monitor.top_k=4"])
    printed = capsys.readouterr().out

    # one line per epoch and run, with accuracy and kept fraction, as training goes
    for name in ("baseline", "curated"):
        lines = [line for line in printed.splitlines() if line.startswith(f"[demo] {name} epoch ")]
        assert [line.split()[3].rstrip(":") for line in lines] == [f"{e}/8" for e in range(1, 9)]
        assert all("val accuracy 0." in line and "kept fraction for the next epoch" in line for line in lines)
    assert "kept fraction for the next epoch 1.000" in printed  # the baseline keeps everything

    # the table: printed and saved
    for line in ("test accuracy (clean test set)", "noise detection precision", "noise detection recall",
                 "compute skipped (sample passes)"):
        assert line in printed
        assert line in (out / "results.md").read_text()
    base, cur = summary["runs"]["baseline"], summary["runs"]["curated"]
    assert 0.0 <= base["test_acc"] <= 1.0 and 0.0 <= cur["test_acc"] <= 1.0
    assert base["detection"]["filter_active"] == 0.0 and cur["detection"]["filter_active"] == 1.0
    assert base["sample_passes"] == 8 * 8000  # every sample, every epoch
    assert cur["sample_passes"] < base["sample_passes"]
    skipped = {row[0]: row[2] for row in summary["table"]}["compute skipped (sample passes)"]
    assert skipped == f"{100 * (1 - cur['sample_passes'] / base['sample_passes']):.1f}%"
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"]["curated"]["test_acc"] == pytest.approx(cur["test_acc"])

    # the plot: a real PNG of a readable size
    png = out / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as image:
        assert image.width >= 1200 and image.height >= 400

    # the W&B offline runs, with the command to upload them
    assert len(summary["wandb_run_dirs"]) == 2
    for run_dir in map(Path, summary["wandb_run_dirs"]):
        assert run_dir.name.startswith("offline-run-") and any(run_dir.glob("run-*.wandb"))
        assert f"wandb sync {run_dir}" in printed


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"curated_examples_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
def test_adoption_examples_run(tmp_path):
    """``adopt_existing.py`` (Lightning, three changes) and ``plain_pytorch.py`` (no Lightning)."""
    data = tmp_path / "shards"
    args = ["--data", str(data), "--samples", "2000", "--epochs", "3", "--workers", "0"]
    adopted = _load_example("adopt_existing").main(args)
    assert 0.0 <= adopted["test_acc"] <= 1.0 and "curation/kept_frac" in adopted
    plain = _load_example("plain_pytorch").main(args)
    assert 0.0 <= plain["test_acc"] <= 1.0
    assert plain["sample_passes"] == 3 * 1600  # warm-up: no filter acts in 3 epochs
