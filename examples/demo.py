"""The demo: label-noise filtering on MNIST-1D with 40% symmetric label noise, on CPU.

    python examples/demo.py --out outputs/demo          # what `make demo` runs (a few minutes)
    python examples/demo.py --out /tmp/demo --fast      # 8 epochs instead of 30 (under a minute)

It makes the noisy shards, then trains twice with the same code path as
``python examples/train.py experiment=mnist1d_noisy``: a baseline (``curation=none``) and a
curated run (``curation=noise_filter``: a GMM on each sample's EMA loss after a warm-up).
It prints one line per epoch (validation accuracy, kept fraction), then a table (test accuracy, noise-detection precision/recall, compute skipped),
writes ``demo.png``, ``results.md`` and ``results.json`` under ``--out``, and leaves W&B
offline runs (``WANDB_MODE=offline``) to upload with ``wandb sync <run dir>``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from curated_loader.reporting import find_curation_callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import compose_config, train

# Fewer epochs, the same data: with much less data the model is still weak when the GMM's
# warm-up ends (5 epochs) and the filter then flags clean samples too.
FAST = ["trainer.max_epochs=8"]


class EpochLine(Callback):
    """Prints one line per training epoch: validation accuracy and the kept fraction."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        curation = find_curation_callback(trainer)
        kept = curation.history[-1].get("curation/kept_frac") if curation is not None and curation.history else None
        print(f"[demo] {self.name} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
              f"val accuracy {_fmt(None if acc is None else float(acc))}, "
              f"kept fraction for the next epoch {_fmt(kept)}", flush=True)


def run_pair(out: Path, logger: str, extra: list[str]) -> dict[str, dict[str, Any]]:
    """Train the baseline and the curated run; return both results."""
    common = [
        "experiment=mnist1d_noisy", f"paths.data_dir={out / 'data'}", f"logger={logger}",
        "trainer.enable_progress_bar=false", *extra,
    ]
    runs = {
        "baseline": ["curation=none", "task_name=demo_baseline"],
        "curated": ["curation=noise_filter", "task_name=demo_curated"],
    }
    results = {}
    for name, overrides in runs.items():
        cfg = compose_config([*common, *overrides, f"paths.output_dir={out / name}"])
        print(f"[demo] training the {name} run ({cfg.trainer.max_epochs} epochs) ...", flush=True)
        results[name] = train(cfg, callbacks=[EpochLine(name)])
        print(f"[demo] {name}: test accuracy {results[name]['test_acc']:.4f}, fit {results[name]['fit_time_s']:.1f} s", flush=True)
    return results


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def summary_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    base, cur = results["baseline"], results["curated"]
    det = cur["detection"] or {}
    base_det = base["detection"] or {}
    skipped = 1.0 - cur["sample_passes"] / base["sample_passes"]
    return [
        ("test accuracy (clean test set)", _fmt(base["test_acc"]), _fmt(cur["test_acc"])),
        ("noise detection precision", "-", _fmt(det.get("precision"))),
        ("noise detection recall", "-", _fmt(det.get("recall"))),
        ("noise detection AUROC (score)", _fmt(base_det.get("auroc")), _fmt(det.get("auroc"))),
        ("noisy fraction of kept samples", _fmt(base_det.get("noisy_kept_frac")), _fmt(det.get("noisy_kept_frac"))),
        ("sample passes", str(base["sample_passes"]), str(cur["sample_passes"])),
        ("compute skipped (sample passes)", "-", f"{100 * skipped:.1f}%"),
        ("fit wall time", f"{base['fit_time_s']:.1f} s", f"{cur['fit_time_s']:.1f} s"),
    ]


def format_table(rows: list[tuple[str, str, str]], header: tuple[str, str, str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]

    def line(r: tuple[str, str, str]) -> str:
        return f"| {r[0].ljust(widths[0])} | {r[1].rjust(widths[1])} | {r[2].rjust(widths[2])} |"

    sep = f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 1)}:|{'-' * (widths[2] + 1)}:|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy per epoch (both runs), detection per epoch, and the final EMA-loss
    histograms of truly clean vs truly noisy samples split by the filter's verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, cur = results["baseline"], results["curated"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    fig.suptitle(title, fontsize=12)

    ax = axes[0]
    for name, res, color in (("baseline (no curation)", base, "#7f7f7f"), ("curated (GMM noise filter)", cur, "#1f77b4")):
        epochs = [int(e["epoch"]) + 1 for e in res["epochs"] if "val_acc" in e]
        acc = [e["val_acc"] for e in res["epochs"] if "val_acc" in e]
        ax.plot(epochs, acc, marker="o", markersize=3, color=color, label=f"{name}: final {res['test_acc']:.3f}")
    start = _filter_start(cur)
    if start is not None:
        # the decision made at the end of 0-based epoch `start` first acts in epoch start + 1,
        # drawn as 1-based epoch start + 2
        ax.axvline(start + 1.5, color="#1f77b4", linestyle=":", linewidth=1)
        low, high = ax.get_ylim()
        ax.text(start + 1.7, high - 0.04 * (high - low), "noise filter acts from here", color="#1f77b4", fontsize=8,
                va="top")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy on the clean test set")
    ax.set_title("(a) test accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)

    ax = axes[1]
    hist = cur["detection_history"]
    if hist:
        ep = [int(h["epoch"]) + 1 for h in hist]
        active = [bool(h["filter_active"]) for h in hist]
        for key, color, label in (("precision", "#d62728", "precision"), ("recall", "#2ca02c", "recall")):
            ax.plot([e for e, a in zip(ep, active) if a], [h[key] for h, a in zip(hist, active) if a], marker="o",
                    markersize=3, color=color, label=f"detection {label}")
        ax.plot(ep, [h["auroc"] for h in hist], color="#9467bd", linestyle="--", label="detection AUROC (score)")
    kept = [h["curation/kept_frac"] for h in cur["curation_history"]]
    ax.plot([int(h["epoch"]) + 1 for h in cur["curation_history"]], kept, color="#ff7f0e", label="kept fraction (next epoch)")
    ax.set_ylim(0, 1.05)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch (decision made at its end)")
    ax.set_title("(b) curated run: flagged vs true noise")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)

    ax = axes[2]
    ps = cur["per_sample"]
    if "noise_mask" in ps and "flagged" in ps:
        seen, noisy, flagged, loss = ps["seen"], ps["noise_mask"], ps["flagged"], ps["ema_loss"]
        groups = [
            (seen & ~noisy & ~flagged, "#2ca02c", "truly clean, kept"),
            (seen & ~noisy & flagged, "#bcbd22", "truly clean, flagged"),
            (seen & noisy & ~flagged, "#9467bd", "truly noisy, kept (missed)"),
            (seen & noisy & flagged, "#d62728", "truly noisy, flagged"),
        ]
        bins = np.linspace(0.0, float(np.quantile(loss[seen], 0.995)), 50)
        ax.hist([np.clip(loss[m], bins[0], bins[-1]) for m, _, _ in groups], bins=bins, stacked=True,
                color=[c for _, c, _ in groups], label=[f"{lbl} ({int(m.sum())})" for m, _, lbl in groups])
        ax.set_xlabel("per-sample EMA loss (last time seen)")
        ax.set_ylabel("samples")
        ax.legend(fontsize=9)
    ax.set_title("(c) curated run, final epoch: EMA loss by true label state")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _filter_start(result: dict[str, Any]) -> int | None:
    for h in result["detection_history"]:
        if h["filter_active"]:
            return int(h["epoch"])
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (shards, runs, plot, table)")
    parser.add_argument("--fast", action="store_true", help="8 epochs instead of 30 (for tests)")
    parser.add_argument("--logger", choices=("wandb", "csv", "none"), default="wandb")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs, e.g. trainer.max_epochs=10")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")  # the run paths and the sync command are printed below
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    extra = (FAST if args.fast else []) + list(args.overrides)
    results = run_pair(out, args.logger, extra)
    total = time.perf_counter() - start

    cur = results["curated"]
    n_train = cur["num_train_samples"]
    epochs = cur["epochs_run"]
    cfg = compose_config(["experiment=mnist1d_noisy", *extra])
    title = (f"MNIST-1D, {n_train} training samples with {100 * cfg.dataset.noise_rate:.0f}% {cfg.dataset.noise_kind} "
             f"label noise, {epochs} epochs on CPU")
    rows = summary_rows(results)
    table = format_table(rows, ("", "baseline", "curated (GMM filter)"))
    plot_path = out / "demo.png"
    plot(results, plot_path, title)

    print()
    print(title)
    print(table)
    print(f"\ntotal demo time: {total:.1f} s (both runs, shards included)")
    print(f"plot: {plot_path}")
    wandb_dirs = [r["wandb_run_dir"] for r in results.values() if r.get("wandb_run_dir")]
    for d in wandb_dirs:
        print(f"W&B offline run: {d}\n  upload with: wandb sync {d}")

    (out / "results.md").write_text(f"{title}\n\n{table}\n\ntotal demo time: {total:.1f} s\n")
    summary = {
        "title": title, "total_time_s": total, "table": [list(r) for r in rows], "plot": str(plot_path),
        "wandb_run_dirs": wandb_dirs,
        "runs": {name: {k: v for k, v in r.items() if k != "per_sample"} for name, r in results.items()},
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    main()
