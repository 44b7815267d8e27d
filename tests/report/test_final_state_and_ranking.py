"""The fit-end curation state (report/export show the end of training whatever the checkpoint
policy) and a suspicious-sample ranking that does not saturate."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from curated_loader.curation import Reason
from curated_loader.reporting.export import export_curated
from curated_loader.reporting.report import write_report


@pytest.mark.timeout(300)
def test_final_state_shows_the_end_of_training_not_the_kept_checkpoint(tmp_path):
    pytest.importorskip("mnist1d")
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from curated_loader import CuratedDataModule, CurationCallback
    from curated_loader.curation import CurationPlan, GMMFilter
    from curated_loader.datasets import write_noisy_mnist1d
    from curated_loader.models import Classifier

    shards = write_noisy_mnist1d(tmp_path / "data", num_samples=1000, samples_per_shard=200, progress=False)
    torch.manual_seed(0)
    dm = CuratedDataModule(shards.train_index, fields=("npy", "cls"), decode=(), batch_size=64, num_workers=2, seed=0)
    callback = CurationCallback(CurationPlan(noise_filter=GMMFilter(tau=0.5, warmup_epochs=2)))
    # keeps only the epoch-0 checkpoint: "the best" by a metric that only grows
    keep_first = ModelCheckpoint(dirpath=tmp_path / "logs" / "checkpoints", monitor="epoch", mode="min", save_top_k=1)
    trainer = L.Trainer(max_epochs=4, callbacks=[callback, keep_first], accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path / "logs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Classifier(), datamodule=dm)

    state_path = tmp_path / "logs" / "curation_state.pt"
    raw = torch.load(state_path, map_location="cpu", weights_only=True)  # plain tensors and values only
    assert raw["trainer_epoch"] == 4 and raw["decision"]["epoch"] == 4
    assert torch.equal(raw["decision"]["reason"], callback.decision.reason.cpu())
    assert [s["nsamples"] for s in raw["shards"]] == [200] * 4 and all(s["members"] for s in raw["shards"])
    assert raw["policies"]["noise_filters"][0]["class"] == "GMMFilter"

    early = keep_first.best_model_path
    summaries = {}
    for name, source in (("early", early), ("final", state_path)):
        write_report(source, shards.train_index, tmp_path / name, top_k=5, progress=False)
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert summaries["early"]["decision_epoch"] == 1 and summaries["early"]["counts"]["flagged"] == 0
    final = summaries["final"]
    flagged = int(torch.isin(raw["decision"]["reason"].long(), torch.tensor([int(r) for r in Reason if r.flagged])).sum())
    assert final["decision_epoch"] == 4 and final["counts"]["flagged"] == flagged > 0
    assert final["filters"][0]["settings_recorded"] and "tau = 0.5" in final["filters"][0]["rule"]

    result = export_curated(state_path, shards.train_index, tmp_path / "clean", progress=False)
    assert result.num_removed == flagged and result.decision_epoch == 4


def test_ranking_does_not_saturate_with_gmm_scores(tmp_path, make_checkpoint):
    """GMM scores of 1.0 for every flagged sample (a saturated posterior): the report ranks by
    the filter's loss instead, strictly decreasing, not by id."""
    from curated_loader.data.writer import write_arrays

    n = 60
    labels = np.arange(n) % 10
    write_arrays(np.zeros((n, 8), np.float32), labels, tmp_path / "d", samples_per_shard=20, progress=False)
    index_json = str(tmp_path / "d" / "train-index.json")
    flagged = np.random.default_rng(1).choice(n, size=25, replace=False)
    reason = np.zeros(n, np.int8)
    reason[flagged] = int(Reason.FLAGGED_GMM)
    score = np.zeros(n, np.float32)
    score[flagged] = 1.0
    ckpt = make_checkpoint(tmp_path / "gmm.ckpt", labels, reason, score=score, shards=index_json)

    write_report(ckpt, index_json, tmp_path / "r", top_k=10, progress=False)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    top = summary["top_suspicious"]
    loss = torch.load(ckpt, weights_only=True)["callbacks"]
    ledger = next(iter(loss.values()))["ledger"]["tables"]
    mean_loss = (ledger["loss_sum"] / ledger["count"].clamp_min(1)).double()
    assert all(r["reason"] == "flagged_gmm" and r["score"] == 1.0 for r in top)  # tied filter scores ...
    values = [r["evidence_value"] for r in top]
    assert all(a > b for a, b in zip(values, values[1:]))  # ... but a strictly decreasing ranking
    assert [r["id"] for r in top] == sorted(flagged.tolist(), key=lambda i: -mean_loss[i].item())[:10]
    assert [r["id"] for r in top] != sorted(r["id"] for r in top)
    assert all(r["evidence"] == "mean_loss" for r in top)
    assert [r["percentile"] for r in top] == sorted((r["percentile"] for r in top), reverse=True)
    f = summary["filters"][0]
    assert f["reason"] == "flagged_gmm" and f["flagged"] == 25 and not f["settings_recorded"]
    assert f["lowest_flagged"] == pytest.approx(min(mean_loss[i].item() for i in flagged))
    html = (tmp_path / "r" / "report.html").read_text()
    assert "p(clean) &lt;= tau = 0.1" in html and "class defaults" in html  # the filter's own threshold


def test_report_escapes_what_it_reads(tmp_path, make_checkpoint):
    """Keys from a shard are data: a key holding markup appears escaped, never as markup."""
    import io
    import tarfile

    shard = tmp_path / "x-000000.tar"
    with tarfile.open(shard, "w") as tf:
        for i, key in enumerate(["ok0", "<script>alert(1)</script>", "ok2"]):
            for suffix, data in (("cls", str(i).encode()),):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    reason = np.array([0, int(Reason.FLAGGED_GMM), 0], np.int8)
    ckpt = make_checkpoint(tmp_path / "x.ckpt", np.arange(3), reason, shards=str(shard))
    page = write_report(ckpt, str(shard), tmp_path / "r", top_k=3, progress=False).read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
