"""The curation report from a real checkpoint: its numbers are the checkpoint's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from curated_loader.curation import Reason
from curated_loader.data.shards import load_index
from curated_loader.data.tario import scan_layout
from curated_loader.reporting.report import SECTIONS, write_report

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects section ids, ``data-count`` values, image sources and suspicious rows."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.counts: dict[str, str] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.rows: dict[int, dict[str, str]] = {}
        self._capture: tuple[str, str] | None = None
        self._row: int | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag in ("a", "link", "script"):
            self.links.append(a.get("href") or a.get("src") or "")
        if tag == "tr" and "data-id" in a:
            self._row = int(a["data-id"])
            self.rows[self._row] = {}
        if "data-count" in a:
            self._capture = ("count", a["data-count"])
        elif "data-field" in a and self._row is not None:
            self._capture = ("field", a["data-field"])

    def handle_data(self, data):
        if self._capture is not None:
            kind, name = self._capture
            if kind == "count":
                self.counts[name] = data.strip()
            else:
                self.rows[self._row][name] = data.strip()
            self._capture = None


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    page = write_report(trained_run.checkpoint, str(trained_run.train_index), out, top_k=12, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    parsed = _Page()
    parsed.feed(page.read_text())
    return page, summary, parsed


def test_report_numbers_equal_the_checkpoints(trained_run, report):
    page, summary, parsed = report
    decision, history = trained_run.raw["decision"], trained_run.raw["history"]
    reason = decision["reason"].long()
    n = trained_run.num_train
    kept = int(decision["keep"].sum())
    per_reason = torch.bincount(reason, minlength=len(Reason)).tolist()

    counts = summary["counts"]
    assert counts["total"] == summary["num_samples"] == n
    assert counts["kept"] == kept
    assert counts["flagged"] == len(trained_run.flagged) > 0
    assert counts["pruned"] == len(trained_run.pruned) > 0
    assert counts["by_reason"] == {r.name.lower(): per_reason[r] for r in Reason}
    assert counts["kept"] + counts["flagged"] + counts["pruned"] == n
    assert summary["decision_epoch"] == decision["epoch"]

    # the HTML shows the same numbers
    assert parsed.counts["total"] == str(n)
    for name in ("kept", "flagged", "pruned", "unseen"):
        assert parsed.counts[name] == str(counts[name]), name
    for r in Reason:
        assert parsed.counts[f"reason:{r.name.lower()}"] == str(per_reason[r])

    # the timeline is the callback's history, epoch by epoch
    assert [row["epoch"] for row in summary["timeline"]] == [int(h["epoch"]) for h in history]
    for row, h in zip(summary["timeline"], history):
        for key in ("kept", "flagged", "pruned"):
            assert row[key] == h[f"curation/{key}"]
            assert parsed.counts[f"timeline:{row['epoch']}:{key}"] == str(int(h[f"curation/{key}"]))
        assert row["weight_std"] == pytest.approx(h["curation/weight_std"])
    assert summary["timeline"][-1]["flagged"] == counts["flagged"]

    # flagged per class adds up, per the ledger's labels
    labels = trained_run.raw["ledger"]["tables"]["label"].long()
    flagged = torch.zeros(n, dtype=torch.bool)
    flagged[list(trained_run.flagged)] = True
    for row in summary["per_class"]:
        assert row["flagged"] == int((flagged & (labels == row["label"])).sum())
        assert row["total"] == int((labels == row["label"]).sum())
        assert parsed.counts[f"class:{row['label']}:flagged"] == str(row["flagged"])
    assert sum(r["flagged"] for r in summary["per_class"]) == counts["flagged"]

    # kept vs flagged distributions are over the right samples
    ema = trained_run.raw["ledger"]["tables"]["ema_loss"]
    loss = summary["distributions"]["ema_loss"]
    assert loss["flagged"]["count"] == counts["flagged"]
    assert loss["flagged"]["mean"] == pytest.approx(float(ema[flagged].double().mean()), rel=1e-6)
    assert loss["flagged"]["median"] > loss["kept"]["median"]  # small-loss filter flags high losses


def test_report_top_suspicious_with_provenance(trained_run, report):
    page, summary, parsed = report
    top = summary["top_suspicious"]
    assert len(top) == 12
    scores = [r["score"] for r in top]
    assert scores == sorted(scores, reverse=True)
    decision = trained_run.raw["decision"]
    index = load_index(str(trained_run.train_index))
    labels = trained_run.raw["ledger"]["tables"]["label"]
    predictions = trained_run.raw["ledger"]["tables"]["last_pred"]
    for r in top:
        assert r["id"] in trained_run.flagged and r["reason"] == "flagged_small_loss"
        assert r["score"] == pytest.approx(float(decision["score"][r["id"]]))
        assert r["given"] == int(labels[r["id"]]) == r["shard_label"]
        assert r["predicted"] == int(predictions[r["id"]]) >= 0  # the model's last prediction
        assert r["shard"] == index.urls[r["shard_index"]]
        assert r["id"] == index.offsets[r["shard_index"]] + r["position"]
        assert scan_layout(r["shard"]).keys[r["position"]] == r["key"]
        row = parsed.rows[r["id"]]
        assert row["given"] == str(r["given"]) and row["predicted"] == str(r["predicted"])


def test_report_is_self_contained_and_sectioned(report):
    page, summary, parsed = report
    assert parsed.sections == list(SECTIONS)
    assert parsed.images and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert parsed.links == []
    html = page.read_text()
    assert not re.search(r'(src|href)="(https?:|//)', html)
    assert html.count('<svg class="signal"') == 12  # 1-D signal previews, one per suspicious sample
    for name in ("timeline", "distributions", "classes"):
        assert (page.parent / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    assert summary["files"]["html"] == "report.html"


def test_report_image_previews_and_no_decision(tmp_path, make_checkpoint):
    """Image shards get thumbnails; a checkpoint written before the first epoch ended
    reports everything as kept."""
    from curated_loader.data.writer import write_arrays

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(30, 12, 12), dtype=np.uint8)
    labels = np.arange(30) % 10
    write_arrays(images, labels, tmp_path / "img", input_ext="png", samples_per_shard=10, progress=False)
    reason = np.zeros(30, np.int8)
    reason[[3, 7, 11]] = int(Reason.FLAGGED_GMM)
    ckpt = make_checkpoint(tmp_path / "img.ckpt", labels, reason)
    page = write_report(ckpt, str(tmp_path / "img" / "train-index.json"), tmp_path / "r1", top_k=5, progress=False)
    html = page.read_text()
    assert html.count('<img class="thumb"') == 5
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    first = summary["top_suspicious"][:3]
    assert {r["id"] for r in first} == {3, 7, 11}  # flagged samples come first ...
    assert [r["score"] for r in first] == sorted((r["score"] for r in first), reverse=True)  # ... by score
    assert summary["counts"]["flagged"] == 3 and summary["counts"]["by_reason"]["flagged_gmm"] == 3

    ckpt = make_checkpoint(tmp_path / "early.ckpt", labels, None)
    page = write_report(ckpt, str(tmp_path / "img" / "train-index.json"), tmp_path / "r2", top_k=3, progress=False)
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["has_decision"] is False
    assert summary["counts"]["kept"] == 30 and summary["counts"]["flagged"] == 0
    assert "no decision yet" in page.read_text()


@pytest.mark.timeout(300)
def test_report_cli(trained_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "curated_loader.cli", "report", str(trained_run.checkpoint),
         "--shards", str(trained_run.train_index), "--out", str(tmp_path), "--top", "4", "-q"],
        capture_output=True, text=True, cwd=REPO, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["top_suspicious"]) == 4
    assert summary["counts"]["flagged"] == len(trained_run.flagged)
