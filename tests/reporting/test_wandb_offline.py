"""A real W&B offline run from a short training holds the curation panels.

The run is read back from its own files: the ``run-<id>.wandb`` transaction log (records in
the LevelDB log format, each a ``wandb.proto`` ``Record``), the table JSON under
``files/media/table`` and the staged table artifact with the preview images.
"""

from __future__ import annotations

import importlib.util
import json
import time
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curated_loader.curation import Reason
from curated_loader.reporting import TABLE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 32 * 1024  # the log's block size; a record header is 7 bytes
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _load_train_script():
    spec = importlib.util.spec_from_file_location("curated_examples_train", ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("curated_examples_train", module)
    spec.loader.exec_module(module)
    return module


train_script = _load_train_script()


def log_payloads(path: Path) -> Iterator[bytes]:
    """Payloads of a ``.wandb`` file: a 7-byte file header (``:W&B``, magic, version), then
    32 KiB blocks of records ``crc32 (4) | length (2) | type (1) | data``; records that do
    not fit a block are split into FIRST / MIDDLE / LAST pieces; block tails under 7 bytes
    are zero padding."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, pieces = 7, []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # padding up to the block end
            pos += left
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pieces = [payload]
        elif kind == MIDDLE:
            pieces.append(payload)
        elif kind == LAST:
            yield b"".join([*pieces, payload])


def read_run(run_dir: Path) -> dict[str, list]:
    """History rows, summary updates and artifact manifests of an offline run."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, list] = {"history": [], "summary": [], "artifacts": []}
    (log,) = run_dir.glob("run-*.wandb")
    for payload in log_payloads(log):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind in ("history", "summary"):
            items = record.history.item if kind == "history" else record.summary.update
            row: dict = {}
            for item in items:
                keys = [item.key] if item.key else list(item.nested_key)
                node = row
                for key in keys[:-1]:
                    node = node.setdefault(key, {})
                node[keys[-1]] = json.loads(item.value_json)
            out[kind].append(row)
        elif kind == "artifact":
            a = record.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "files": {e.path: e.local_path for e in a.manifest.contents}})
    return out


def read_finished_run(run_dir: Path, timeout: float = 60.0) -> dict[str, list]:
    """The run's records once its log holds the last one (the test metrics, logged after
    fit): on a loaded machine the log can still be being written when ``finish()`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = read_run(run_dir)
            if any("test/acc" in row for row in run["history"]):
                return run
        except Exception:  # a record cut off mid-write
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return run
        time.sleep(0.5)


@pytest.mark.timeout(300)
def test_offline_run_has_metrics_histograms_and_table(tmp_path, monkeypatch):
    home = tmp_path / "wandb_home"
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    top_k, epochs = 8, 4
    cfg = train_script.compose_config([
        "dataset.num_samples=3000", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
        "torch_threads=1", "data.num_workers=0", "curation=full", "curation/noise_filter=small_loss",
        "curation.noise_filter.quantile=0.4", "curation.noise_filter.warmup_epochs=2", "curation.prune.warmup_epochs=2",
        "curation.reweight.warmup_epochs=2", "curation.augment.warmup_epochs=2", "augment=signal_default",
        "logger=wandb", f"monitor.top_k={top_k}", f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'run'}",
    ])
    result = train_script.train(cfg)
    run_dir = Path(result["wandb_run_dir"])
    assert run_dir.name.startswith("offline-run-") and run_dir.parent.parent == tmp_path / "run"
    run = read_finished_run(run_dir)
    rows = run["history"]
    n = 2400

    # scalars: from the CurationCallback, and the monitor's detection metrics
    def logged(key):
        return [r[key] for r in rows if key in r]

    assert len(logged("curation/kept_frac")) == epochs
    assert len(logged("curation/detect_auroc")) == epochs
    assert len(logged("curation/detect_precision")) == epochs - 1  # the filter acts from the 2nd decision on
    assert logged("curation/detect_precision")[-1] == pytest.approx(result["detection"]["precision"], rel=1e-5)
    assert logged("curation/flagged")[-1] == int(result["per_sample"]["flagged"].sum()) > 0

    # histograms: EMA loss and AUM margin, kept vs flagged, on shared bins
    hist_rows = [r for r in rows if "curation/hist/ema_loss_kept" in r]
    assert len(hist_rows) == epochs
    last = hist_rows[-1]
    for name in ("ema_loss", "aum"):
        kept, flagged = last[f"curation/hist/{name}_kept"], last[f"curation/hist/{name}_flagged"]
        assert kept["_type"] == flagged["_type"] == "histogram"
        assert kept["bins"] == flagged["bins"] and len(kept["bins"]) == len(kept["values"]) + 1 == 65
        assert sum(kept["values"]) + sum(flagged["values"]) == n
        assert sum(flagged["values"]) == int(result["per_sample"]["flagged"].sum())
    strength = [r["curation/hist/strength"] for r in hist_rows if "curation/hist/strength" in r]
    assert len(strength) == epochs - 1  # from the augment policy's first decision on
    assert strength[-1]["_type"] == "histogram" and sum(strength[-1]["values"]) == int(result["per_sample"]["keep"].sum())

    # the suspicious-sample table: one per epoch, its rows read back from the run's files
    tables = [r["curation/suspicious"] for r in rows if "curation/suspicious" in r]
    assert len(tables) == epochs == result["tables_logged"]
    assert all(t["_type"] == "table-file" and t["nrows"] == top_k and t["ncols"] == len(TABLE_COLUMNS) for t in tables)
    content = json.loads((run_dir / "files" / tables[-1]["path"]).read_text())
    assert content["columns"] == list(TABLE_COLUMNS)
    table = [dict(zip(content["columns"], row)) for row in content["data"]]
    data_dir = Path(cfg.paths.data_dir) / "mnist1d_n3000_symmetric0.4_s0"
    clean, noisy = np.load(data_dir / "clean_labels.npy"), np.load(data_dir / "noise_mask.npy")
    scores = [row["score"] for row in table]
    assert scores == sorted(scores, reverse=True)
    reasons = {r.name.lower() for r in Reason}
    for row in table:
        sid = row["id"]
        assert row["epoch"] == epochs - 1
        assert row["key"] == f"{sid:08d}" and row["shard"].endswith(f"train-{sid // 1000:06d}.tar")
        assert row["true_noise"] == bool(noisy[sid])
        assert (row["given_label"] != clean[sid]) == row["true_noise"]  # the label the shard holds
        assert 0 <= row["predicted_label"] < 10
        assert row["reason"] in reasons and row["flagged"] == row["reason"].startswith("flagged_")
        assert row["preview"] == "Image"
    assert sum(row["true_noise"] for row in table) >= top_k // 2  # the most suspicious are mostly noisy

    # the previews: the table artifact carries one PNG per row
    run_tables = [a for a in run["artifacts"] if a["type"] == "run_table" and "suspicious" in a["name"]]
    assert len(run_tables) == epochs
    images = {p: local for p, local in run_tables[-1]["files"].items() if p.startswith("media/images/")}
    assert len(images) == top_k
    for local in images.values():
        assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the run summary
    summary = {}
    for update in run["summary"]:
        summary.update(update)
    assert {"curation/detect_auroc", "curation/kept_frac", "test/acc"} <= set(summary)
    assert summary["test/acc"] == pytest.approx(result["test_acc"], rel=1e-5)


def test_monitor_moves_itself_after_the_curation_callback():
    import lightning as L

    from curated_loader import CurationCallback
    from curated_loader.reporting import CurationMonitor

    monitor, curation = CurationMonitor(top_k=3), CurationCallback()
    trainer = L.Trainer(callbacks=[monitor, curation], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    monitor.setup(trainer, L.LightningModule(), "fit")
    assert trainer.callbacks.index(monitor) == trainer.callbacks.index(curation) + 1
    alone = L.Trainer(callbacks=[CurationMonitor()], logger=False, enable_checkpointing=False)
    with pytest.raises(RuntimeError, match="CurationCallback"):
        alone.callbacks[0].setup(alone, L.LightningModule(), "fit")
