"""Noisy labels: the project's noise filters (one training run each) vs cleanlab.

    python benchmarks/noisy_labels.py                       # full grid: 5 settings x 3 seeds
    python benchmarks/noisy_labels.py --settings sym40 --seeds 0
    python benchmarks/noisy_labels.py --quick               # tiny, for the test suite
    python benchmarks/noisy_labels.py --from-json runs.json # tables + plot from a saved run
    python benchmarks/noisy_labels.py --from-json a.json b.json  # several saved runs merged

MNIST-1D generated locally (``make_mnist1d(20000)``: 16 000 train / 4 000 clean test), the
MNIST-1D paper's CNN (``Signal1DCNN``), Adam lr 1e-2, batch 256, 60 epochs. Label noise from
``inject_label_noise``: symmetric 20/40/60%, pair-flip 30/40% and instance-dependent 40%
(toward the confusions of a weak CNN, ``common.weak_model_probs``). The seed changes the noise
draw, the initialization and the shuffling; the data set itself is fixed.

Methods, per setting and seed:

* ``plain`` — plain training on the noisy labels (every sample every epoch).
* ``default`` — ONE training run with the plan's default filter, ``LossMarginFilter()`` with
  its own defaults (its warm-up included); ``default_probe`` adds probes of flagged samples
  (``CurationPlan(probe_every=--probe-every, probe_fraction=--probe-fraction)``).
* ``gmm`` / ``aum`` / ``cartography`` / ``small_loss`` — ONE training run with that filter as
  the plan's noise filter (``benchmarks/common.py`` runs the project's ledger and plan each
  epoch). The filters are not told the noise rate, except ``small_loss``, whose quantile *is*
  the true noise rate (an oracle reference: it needs the rate by construction).
* ``cleanlab`` — ``cleanlab.filter.find_label_issues(labels, pred_probs)`` (defaults) on
  5-fold cross-validated predicted probabilities of the same model (15 epochs per fold), then
  a 60-epoch retraining on the samples it keeps.

Reported: test accuracy after the last epoch; precision / recall / F1 of the flagged set (for
the filters, the final decision's flagged samples) against the true noise mask; compute as
sample passes relative to plain training (the kept samples of every epoch summed; cleanlab
counts its folds and its retraining), wall time and process CPU time of the training loops.
Medians over seeds. ``--json`` keeps every run's numbers; ``--from-json`` prints the tables and
draws the plot again from such a file without training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the repository importable (an import keeps sys.path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from common import (
    NUM_CLASSES,
    RECIPE,
    machine,
    make_split,
    markdown_table,
    median,
    num,
    pct,
    predict,
    run_parallel,
    single_thread,
    train,
)

#: name -> (noise kind, noise rate)
SETTINGS: dict[str, tuple[str, float]] = {
    "clean": ("symmetric", 0.0),
    "sym20": ("symmetric", 0.2),
    "sym40": ("symmetric", 0.4),
    "sym60": ("symmetric", 0.6),
    "pair30": ("pairflip", 0.3),
    "pair40": ("pairflip", 0.4),
    "inst40": ("instance", 0.4),
}
NOISY_SETTINGS = ("sym20", "sym40", "sym60", "pair30", "pair40", "inst40")
#: ``default`` is the plan's default filter (``LossMarginFilter()``, its own defaults and
#: warm-up); ``default_probe`` adds probes of flagged samples (``--probe-every``).
FILTERS = ("default", "default_probe", "gmm", "aum", "cartography", "small_loss")
METHODS = ("plain", *FILTERS, "cleanlab")
#: GMM filter: flag only when p(clean) <= 0.1. Flags are re-decided every epoch, and a flagged
#: sample's statistics freeze (it is no longer trained), so an early false positive tends to
#: stay flagged while a missed noisy sample is caught later: start conservative.
GMM_TAU = 0.1
LABELS = {
    "plain": "plain training",
    "default": "default filter (LossMarginFilter)",
    "default_probe": "default filter + probes",
    "gmm": "GMM filter",
    "aum": "AUM filter",
    "cartography": "cartography filter",
    "small_loss": "small-loss filter (told the rate)",
    "cleanlab": "cleanlab CV + retrain",
}


def make_filter(method: str, noise_rate: float, warmup: int, gmm_tau: float = GMM_TAU,
                overrides: dict[str, Any] | None = None):
    """The plan's noise filter for ``method`` (none of them is told the noise rate except
    ``small_loss``, whose quantile is the rate). ``overrides`` change the default filter's
    hyperparameters (for tuning runs only)."""
    from curated_loader.curation import (
        AUMFilter,
        CartographyFilter,
        GMMFilter,
        LossMarginFilter,
        SmallLossFilter,
    )

    if method in ("default", "default_probe"):
        return LossMarginFilter(**(overrides or {}))
    if method == "gmm":
        return GMMFilter(loss_key="mean_loss", tau=gmm_tau, warmup_epochs=warmup)
    if method == "aum":
        return AUMFilter(threshold=0.0, warmup_epochs=warmup)
    if method == "cartography":
        return CartographyFilter(warmup_epochs=warmup)
    if method == "small_loss":
        return SmallLossFilter(quantile=noise_rate, loss_key="mean_loss", warmup_epochs=warmup)
    raise ValueError(f"unknown filter {method!r}")


def detection(flagged: torch.Tensor, noise_mask: torch.Tensor, score: torch.Tensor | None = None) -> dict[str, float]:
    from curated_loader.reporting.detection import detection_metrics

    out = detection_metrics(flagged, noise_mask, score=score)
    return {k: out[k] for k in ("precision", "recall", "f1", "auroc", "flagged")}


def _run_filter(split, method: str, noise_rate: float, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from curated_loader.curation import CurationPlan
    from curated_loader.reporting.detection import flagged_of

    plan = CurationPlan(
        noise_filter=make_filter(method, noise_rate, cfg["warmup"], cfg.get("gmm_tau", GMM_TAU), cfg.get("overrides")),
        seed=seed,
        num_epochs=cfg["epochs"],
        probe_every=cfg.get("probe_every", 0) if method == "default_probe" else 0,
        probe_fraction=cfg.get("probe_fraction", 0.05),
    )
    run = train(split.x, split.y, epochs=cfg["epochs"], seed=seed, plan=plan, x_test=split.x_test, y_test=split.y_test)
    flagged = flagged_of(run.decision.reason)
    return {
        "info": run.decision.info,
        "test_acc": run.test_acc,
        "passes": run.sample_passes,
        "seconds": run.train_seconds,
        "cpu_seconds": run.cpu_seconds,
        **detection(flagged, split.noise_mask, run.decision.score),
    }


def _run_cleanlab(split, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold

    labels = split.y.numpy()
    pred_probs = np.zeros((split.num_samples, NUM_CLASSES), dtype=np.float32)
    passes, seconds, cpu = 0, 0.0, 0.0
    folds = StratifiedKFold(n_splits=cfg["folds"], shuffle=True, random_state=seed)
    for k, (fit_idx, held_idx) in enumerate(folds.split(np.zeros(len(labels)), labels)):
        fit_ids, held_ids = torch.from_numpy(fit_idx), torch.from_numpy(held_idx)
        run = train(split.x[fit_ids], split.y[fit_ids], epochs=cfg["fold_epochs"], seed=1000 * seed + k)
        start, start_cpu = time.perf_counter(), time.process_time()
        pred_probs[held_idx] = torch.softmax(predict(run.model, split.x[held_ids]), -1).numpy()
        seconds += run.train_seconds + time.perf_counter() - start
        cpu += run.cpu_seconds + time.process_time() - start_cpu
        passes += run.sample_passes
    start, start_cpu = time.perf_counter(), time.process_time()
    issues = find_label_issues(labels, pred_probs, n_jobs=1)
    seconds += time.perf_counter() - start
    cpu += time.process_time() - start_cpu
    found = detection(torch.from_numpy(issues), split.noise_mask)
    if not cfg.get("cleanlab_retrain", True):  # detection only: no test accuracy
        return {"test_acc": float("nan"), "passes": passes, "seconds": seconds, "cpu_seconds": cpu,
                "detect_passes": passes, **found}
    keep = torch.from_numpy(~issues)
    kept = keep.nonzero().squeeze(1)
    run = train(split.x[kept], split.y[kept], epochs=cfg["epochs"], seed=seed, x_test=split.x_test, y_test=split.y_test)
    return {
        "test_acc": run.test_acc,
        "passes": passes + run.sample_passes,
        "seconds": seconds + run.train_seconds,
        "cpu_seconds": cpu + run.cpu_seconds,
        "detect_passes": passes,
        **found,
    }


def run_job(setting: str, seed: int, method: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One (setting, seed, method) cell; runs in a worker process."""
    single_thread()
    kind, rate = SETTINGS[setting]
    split = make_split(cfg["samples"], rate, kind, seed=seed)
    start = time.perf_counter()
    if method == "plain":
        run = train(split.x, split.y, epochs=cfg["epochs"], seed=seed, x_test=split.x_test, y_test=split.y_test)
        out: dict[str, Any] = {"test_acc": run.test_acc, "passes": run.sample_passes,
                               "seconds": run.train_seconds, "cpu_seconds": run.cpu_seconds}
    elif method == "cleanlab":
        out = _run_cleanlab(split, seed, cfg)
    else:
        out = _run_filter(split, method, rate, seed, cfg)
    out.update(setting=setting, seed=seed, method=method, job_seconds=time.perf_counter() - start)
    print(f"  {setting:6s} seed {seed} {method:12s} acc {out['test_acc']:.4f}"
          + (f" F1 {out['f1']:.3f}" if "f1" in out else "") + f" ({out['job_seconds']:.0f} s)", flush=True)
    return out


# -- aggregation and output ---------------------------------------------------------------
def aggregate(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """Median per (setting, method) of every numeric field; compute relative to plain."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["setting"], r["method"]), []).append(r)
    plain = {(r["setting"], r["seed"]): r for r in results if r["method"] == "plain"}
    out: dict[tuple[str, str], dict[str, float]] = {}
    for key, rows in cells.items():
        agg = {}
        for field in ("test_acc", "precision", "recall", "f1", "auroc", "flagged", "passes", "seconds", "cpu_seconds"):
            agg[field] = median([float(r.get(field, float("nan"))) for r in rows])
        rel: dict[str, list[float]] = {"passes": [], "seconds": [], "cpu_seconds": []}
        for r in rows:
            base = plain.get((r["setting"], r["seed"]))
            if base is not None:
                for field, values in rel.items():
                    values.append(r[field] / base[field])
        agg["rel_passes"] = median(rel["passes"])
        agg["rel_time"] = median(rel["seconds"])
        agg["rel_cpu"] = median(rel["cpu_seconds"])
        agg["seeds"] = len(rows)
        out[key] = agg
    return out


def _ratio(value: float, before: str = "", after: str = "") -> str:
    """``1.23×`` (wrapped in ``before``/``after``); ``–`` (or nothing when wrapped) without a plain baseline."""
    if math.isnan(value):
        return "" if before else "–"
    return f"{before}{value:.2f}×{after}"


def _label(method: str, a: dict[str, float]) -> str:
    if method == "cleanlab" and math.isnan(a.get("test_acc", 0.0)):
        return "cleanlab CV (detection only)"
    return LABELS[method]


def tables(agg: dict[tuple[str, str], dict[str, float]], settings: list[str], methods: list[str]) -> str:
    parts = []
    if ("clean", "plain") in agg:
        a = agg[("clean", "plain")]
        parts.append(f"Clean labels, plain training: test accuracy {pct(a['test_acc'])} "
                     f"({a['seeds']} seed(s)), {a['seconds']:.0f} s.\n")
    for setting in settings:
        kind, rate = SETTINGS[setting]
        rows = []
        for method in methods:
            a = agg.get((setting, method))
            if a is None:
                continue
            rows.append([
                _label(method, a), pct(a["test_acc"]), num(a["precision"]), num(a["recall"]), num(a["f1"]),
                _ratio(a["rel_passes"]), f"{a['seconds']:.1f} s{_ratio(a['rel_time'], ' (', ')')}",
                f"{a['cpu_seconds']:.1f} s{_ratio(a['rel_cpu'], ' (', ')')}",
            ])
        header = ["method", "test acc", "precision", "recall", "F1", "sample passes", "wall time", "CPU time"]
        parts.append(f"**{setting}** — {kind} noise, {rate:.0%}\n\n" + markdown_table(header, rows) + "\n")
    # one summary: F1 and accuracy per setting
    header = ["method"] + [f"{s} acc / F1" for s in settings]
    rows = []
    for method in methods:
        row = [_label(method, next((agg[(st, method)] for st in settings if (st, method) in agg), {}))]
        for setting in settings:
            a = agg.get((setting, method))
            row.append("–" if a is None else f"{pct(a['test_acc'])} / {num(a['f1'])}")
        rows.append(row)
    parts.append("**Summary** (median test accuracy / detection F1)\n\n" + markdown_table(header, rows) + "\n")
    return "\n".join(parts)


def plot(agg: dict[tuple[str, str], dict[str, float]], settings: list[str], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / len(methods)
    xs = np.arange(len(settings))
    for panel, (field, title) in enumerate((("test_acc", "test accuracy (last epoch)"), ("f1", "noise detection F1"))):
        ax = axes[panel]
        for i, method in enumerate(methods):
            values = [agg.get((s, method), {}).get(field, float("nan")) for s in settings]
            if all(math.isnan(v) for v in values):
                continue
            ax.bar(xs + (i - (len(methods) - 1) / 2) * width, values, width, label=LABELS[method],
                   color=f"C{METHODS.index(method)}")
        if field == "test_acc" and ("clean", "plain") in agg:
            ax.axhline(agg[("clean", "plain")]["test_acc"], color="k", ls="--", lw=1, label="plain, clean labels")
        ax.set_xticks(xs, settings)
        ax.set_title(title)
        low = min([0.5] + [agg.get((s, m), {}).get(field, 1.0) for s in settings for m in methods if field == "test_acc"])
        ax.set_ylim(0.0 if field == "f1" or low < 0.5 else 0.5, 1.0)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("MNIST-1D with label noise: one curated run per filter vs cleanlab (median of seeds)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(NOISY_SETTINGS), choices=NOISY_SETTINGS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=20000, help="MNIST-1D samples (80%% train)")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--warmup", type=int, default=10, help="epochs before the noise filters act")
    parser.add_argument("--gmm-tau", type=float, default=GMM_TAU, help="GMM filter: flag when p(clean) <= this")
    parser.add_argument("--folds", type=int, default=5, help="cleanlab cross-validation folds")
    parser.add_argument("--fold-epochs", type=int, default=15, help="training epochs per cleanlab fold")
    parser.add_argument("--probe-every", type=int, default=2, help="default_probe: probe flagged samples every k epochs")
    parser.add_argument("--probe-fraction", type=float, default=0.05, help="default_probe: at most this fraction of N per probe")
    parser.add_argument("--overrides", default="", help="tuning only: JSON of LossMarginFilter hyperparameters")
    parser.add_argument("--no-plain", action="store_true", help="skip plain training (then no compute ratios)")
    parser.add_argument("--cleanlab-no-retrain", action="store_true", help="cleanlab: detection only, no retraining")
    parser.add_argument("--no-clean", action="store_true", help="skip the clean-label reference run")
    parser.add_argument("--processes", type=int, default=2, help="parallel worker processes (1 thread each)")
    parser.add_argument("--plot", default="docs/img/noisy_labels.png", help="PNG path ('' for none)")
    parser.add_argument("--json", default="", help="write every run's numbers to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny: 2000 samples, 3 epochs, 1 seed, sym40")
    parser.add_argument("--from-json", nargs="+", default=[], help="no training: tables and plot from --json file(s)")
    args = parser.parse_args(argv)
    if args.from_json:
        files = [json.loads(Path(f).read_text()) for f in args.from_json]
        results = [r for saved in files for r in saved["results"]]
        settings = [s for s in SETTINGS if any(s in saved["settings"] for saved in files)]
        agg = aggregate(results)
        methods = [m for m in METHODS if any(r["method"] == m for r in results)]
        print(tables(agg, settings, methods))
        if args.plot:
            plot(agg, settings, methods, Path(args.plot))
        return {"results": results, "aggregate": agg}
    if args.quick:
        args.samples, args.epochs, args.warmup, args.folds, args.fold_epochs = 2000, 3, 1, 2, 1
        args.seeds, args.no_clean, args.processes = args.seeds[:1], True, 1
        if args.settings == list(NOISY_SETTINGS):
            args.settings = ["sym40"]
    single_thread()
    cfg = {k: getattr(args, k) for k in ("samples", "epochs", "warmup", "gmm_tau", "folds", "fold_epochs",
                                         "probe_every", "probe_fraction")}
    cfg["cleanlab_retrain"] = not args.cleanlab_no_retrain
    cfg["overrides"] = json.loads(args.overrides) if args.overrides else None
    methods = [m for m in METHODS if m in args.methods]
    if "plain" not in methods and not args.no_plain:
        methods.insert(0, "plain")  # the compute baseline
    jobs = [(s, seed, m, cfg) for s in args.settings for seed in args.seeds for m in methods]
    if not args.no_clean:
        jobs += [("clean", seed, "plain", cfg) for seed in args.seeds]
    cost = {"cleanlab": 0, "plain": 1}
    jobs.sort(key=lambda j: cost.get(j[2], 2))  # longest first, for the pool's balance
    print(f"# noisy labels: {len(jobs)} runs on {machine()}, {args.processes} process(es); "
          f"settings {args.settings}, seeds {args.seeds}, {args.epochs} epochs", flush=True)
    start = time.perf_counter()
    results = run_parallel(run_job, jobs, args.processes)
    total = time.perf_counter() - start
    agg = aggregate(results)
    print()
    print(tables(agg, args.settings, methods))
    print(f"total wall time {total / 60:.1f} min")
    if args.plot:
        plot(agg, args.settings, methods, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": cfg, "settings": args.settings, "seeds": args.seeds,
                                               "results": results, "total_seconds": total}, indent=1))
    return {"results": results, "aggregate": agg}


if __name__ == "__main__":
    main()
