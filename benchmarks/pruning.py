"""InfoBatch-style pruning vs full data vs uniform random pruning at the same budget.

    python benchmarks/pruning.py                      # 3 seeds, ratios 0.5 and 0.7
    python benchmarks/pruning.py --ratios 0.7 --seeds 0
    python benchmarks/pruning.py --final-lr-decay 8 0.5 --reductions normalized mean
                                                      # every variant also with lr x0.5 in the last 8 epochs
    python benchmarks/pruning.py --quick              # tiny, for the test suite
    python benchmarks/pruning.py --from-json runs.json  # table + plot from a saved run

Clean MNIST-1D (``make_mnist1d(20000)``: 16 000 train / 4 000 test), the MNIST-1D paper's CNN,
Adam lr 1e-2, batch 256, 60 epochs (``benchmarks/common.py``). Per seed:

* ``full`` — every sample every epoch, plain mean loss, no ledger.
* ``infobatch r`` — the project's ``InfoBatchPrune(ratio=r)`` as the plan's pruning stage:
  each epoch, samples whose loss (``--loss-key``, default the latest loss as in InfoBatch) is
  below the mean are skipped with probability ``r`` and the kept ones are weighted ``1/(1-r)``;
  full data in the last 12.5% of epochs (its default). The ledger records the per-sample loss
  only (all InfoBatch needs; ``--record-logits`` adds logits, as a noise filter would need).
* ``random r`` — uniform random pruning with exactly the same number of sample passes in
  every epoch as the InfoBatch run of the same seed (no reweighting, no ledger).

``--reductions`` runs InfoBatch with each loss reduction (``normalized``: ``Σ w·ℓ / Σ w``, the
project's default; ``mean``: ``mean(w·ℓ)``, upstream InfoBatch's). With Adam, ``mean`` carries
a hidden learning-rate decay when pruning stops (see ``curated_loader.curation.reduction``), so
``--final-lr-decay K F`` runs *every* variant (full, InfoBatch, random) a second time with the
learning rate multiplied by ``F`` in the last ``K`` epochs: compare within one schedule.

Reported: last-epoch test accuracy (and, less noisy, the mean test accuracy of the last 5
epochs), sample passes, wall time and process CPU time of the training loop (the InfoBatch
rows include the ledger records and the per-epoch decision). Medians over seeds; each delta is
taken against the full-data run of the same seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from common import (
    RECIPE,
    machine,
    make_split,
    markdown_table,
    median,
    pct,
    run_parallel,
    single_thread,
    train,
)

from curated_loader.curation import REDUCTIONS, CurationPlan, Decision, InfoBatchPrune


class RandomBudget:
    """Duck-typed plan: epoch ``e`` keeps ``counts[e]`` samples drawn uniformly (weight 1)."""

    def __init__(self, num_samples: int, counts: list[int], seed: int) -> None:
        self.num_samples = num_samples
        self.counts = counts
        self.generator = torch.Generator().manual_seed(seed + 31337)

    def decide(self, ledger: Any, epoch: int) -> Decision:
        decision = Decision.keep_all(self.num_samples, epoch)
        if epoch < len(self.counts) and self.counts[epoch] < self.num_samples:
            drop = torch.randperm(self.num_samples, generator=self.generator)[self.counts[epoch] :]
            decision.keep[drop] = False
            decision.weight[drop] = 0.0
        return decision


def _counting(counts: list[int]):
    def on_epoch_end(epoch, ledger, decision) -> None:
        counts.append(int(decision.keep.sum()))

    return on_epoch_end


def run_job(seed: int, kind: str, ratio: float, cfg: dict[str, Any], schedule: str = "constant",
            reduction: str = "normalized") -> list[dict[str, Any]]:
    """``kind`` "full" -> one row; "infobatch" -> the InfoBatch row and its random twin.
    ``schedule`` "decay" applies ``cfg["final_lr_decay"]``; ``reduction`` is InfoBatch's."""
    single_thread()
    split = make_split(cfg["samples"], 0.0, seed=seed)
    n, epochs = split.num_samples, cfg["epochs"]
    common = {"epochs": epochs, "seed": seed, "x_test": split.x_test, "y_test": split.y_test, "eval_every": 1,
              "final_lr_decay": tuple(cfg["final_lr_decay"]) if schedule == "decay" else None}
    if kind == "full":
        run = train(split.x, split.y, **common)
        rows = [("full", 0.0, run)]
    else:
        prune = InfoBatchPrune(ratio=ratio, warmup_epochs=cfg["warmup"], loss_key=cfg["loss_key"])
        plan = CurationPlan(prune=prune, seed=seed, num_epochs=epochs, reduction=reduction)
        counts = [n]  # epoch 0 is always full
        infobatch = train(split.x, split.y, plan=plan, on_epoch_end=_counting(counts),
                          record_logits=cfg["record_logits"], **common)
        twin = train(split.x, split.y, plan=RandomBudget(n, counts, seed), track=False, **common)
        assert twin.sample_passes == infobatch.sample_passes, (twin.sample_passes, infobatch.sample_passes)
        rows = [("infobatch" if reduction == "normalized" else f"infobatch-{reduction}", ratio, infobatch),
                ("random" if reduction == "normalized" else f"random-{reduction}", ratio, twin)]
    out = []
    for method, r, run in rows:
        last5 = [h["test_acc"] for h in run.history[-5:]]
        out.append({"seed": seed, "method": method, "ratio": r, "schedule": schedule, "test_acc": run.test_acc,
                    "test_acc_last5": sum(last5) / len(last5), "passes": run.sample_passes,
                    "seconds": run.train_seconds, "cpu_seconds": run.cpu_seconds})
        print(f"  seed {seed} {method:9s} r={r:.2f} acc {run.test_acc:.4f} passes {run.sample_passes} "
              f"{run.train_seconds:.1f} s", flush=True)
    return out


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (schedule, method, ratio); deltas against full data of the same seed and schedule."""
    rows = []
    for schedule in sorted({r.get("schedule", "constant") for r in results}):
        rows += _aggregate([r for r in results if r.get("schedule", "constant") == schedule], schedule)
    return rows


def _aggregate(results: list[dict[str, Any]], schedule: str) -> list[dict[str, Any]]:
    full = {r["seed"]: r for r in results if r["method"] == "full"}
    keys = sorted({(r["method"], r["ratio"]) for r in results}, key=lambda k: (k[1], not k[0].startswith("infobatch"), k[0]))
    rows = []
    for method, ratio in keys:
        cell = [r for r in results if (r["method"], r["ratio"]) == (method, ratio)]
        delta = [r["test_acc"] - full[r["seed"]]["test_acc"] for r in cell if r["seed"] in full]
        saved_passes = [1 - r["passes"] / full[r["seed"]]["passes"] for r in cell if r["seed"] in full]
        saved_time = [1 - r["seconds"] / full[r["seed"]]["seconds"] for r in cell if r["seed"] in full]
        saved_cpu = [1 - r["cpu_seconds"] / full[r["seed"]]["cpu_seconds"] for r in cell if r["seed"] in full]
        delta5 = [r["test_acc_last5"] - full[r["seed"]]["test_acc_last5"] for r in cell if r["seed"] in full]
        rows.append({
            "method": method, "ratio": ratio, "schedule": schedule, "seeds": len(cell),
            "test_acc": median([r["test_acc"] for r in cell]),
            "delta_acc": median(delta), "passes": median([r["passes"] for r in cell]),
            "test_acc_last5": median([r["test_acc_last5"] for r in cell]), "delta_acc_last5": median(delta5),
            "seconds": median([r["seconds"] for r in cell]), "cpu_seconds": median([r["cpu_seconds"] for r in cell]),
            "saved_passes": median(saved_passes), "saved_time": median(saved_time), "saved_cpu": median(saved_cpu),
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    header = ["lr schedule", "method", "test acc", "Δ acc vs full (pts)", "last-5 mean acc (Δ)", "sample passes",
              "passes saved", "wall time (saved)", "CPU time (saved)"]
    body = []
    for r in rows:
        kind, _, reduction = r["method"].partition("-")
        name = "full data" if kind == "full" else (
            f"{'InfoBatch' if kind == 'infobatch' else 'uniform random'} r={r['ratio']:g}"
            + (f" (twin of {reduction})" if kind == "random" and reduction else f" ({reduction})" if reduction else ""))
        full = r["method"] == "full"
        body.append([r.get("schedule", "constant"),
            name, pct(r["test_acc"], 2), "–" if full else f"{100 * r['delta_acc']:+.2f}",
            pct(r["test_acc_last5"], 2) + ("" if full else f" ({100 * r['delta_acc_last5']:+.2f})"),
            f"{r['passes'] / 1e6:.3f} M", "–" if full else pct(r["saved_passes"]),
            f"{r['seconds']:.1f} s" + ("" if full else f" ({pct(r['saved_time'])})"),
            f"{r['cpu_seconds']:.1f} s" + ("" if full else f" ({pct(r['saved_cpu'])})"),
        ])
    return markdown_table(header, body)


def plot(rows: list[dict[str, Any]], results: list[dict[str, Any]], path: Path, epochs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"full": "k", "infobatch": "tab:blue", "random": "tab:orange"}
    results = [r for r in results if r.get("schedule", "constant") == rows[0].get("schedule", "constant")]
    rows = [r for r in rows if r.get("schedule", "constant") == rows[0].get("schedule", "constant")]
    markers = {0.0: "o"}
    for r in results:
        marker = markers.setdefault(r["ratio"], "osD^v"[len(markers) % 5])
        axes[0].scatter(r["passes"] / 1e6, 100 * r["test_acc"], color=colors[r["method"].split("-")[0]], marker=marker, alpha=0.35, s=18)
    for r in rows:
        marker = markers[r["ratio"]]
        label = "full data" if r["method"] == "full" else f"{r['method']} r={r['ratio']:g}"
        axes[0].scatter(r["passes"] / 1e6, 100 * r["test_acc"], color=colors[r["method"].split("-")[0]], marker=marker, s=70,
                        edgecolor="k", label=label)
    axes[0].set_xlabel("sample passes (millions)")
    axes[0].set_ylabel("test accuracy, last epoch (%)")
    axes[0].set_title("accuracy vs compute (small: seeds, large: median)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    names = ["full" if r["method"] == "full" else f"{r['method'][:4]} {r['ratio']:g}" for r in rows]
    xs = np.arange(len(rows))
    # wall time is left out of the plot: on a shared machine it follows the other load more than
    # the run (the table has it); the process CPU time of one-thread runs is the steadier measure
    for k, (field, label) in enumerate((("saved_passes", "sample passes saved"), ("saved_cpu", "CPU time saved"))):
        axes[1].bar(xs + (k - 0.5) * 0.4, [100 * r[field] if r["method"] != "full" else 0 for r in rows], 0.4, label=label)
    axes[1].axhline(40, color="tab:blue", ls=":", lw=1)
    axes[1].axhline(35, color="tab:orange", ls=":", lw=1)
    axes[1].set_xticks(xs, names, fontsize=8)
    axes[1].set_ylabel("% saved vs full data (median)")
    axes[1].set_title("savings vs full data (goals: 40% passes, 35% time)")
    axes[1].legend(fontsize=8)
    axes[1].grid(axis="y", alpha=0.3)
    fig.suptitle(f"Clean MNIST-1D, {epochs} epochs: InfoBatch-style pruning vs uniform random at the same budget")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.7], help="InfoBatch prune ratios")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--warmup", type=int, default=1, help="InfoBatchPrune.warmup_epochs")
    parser.add_argument("--loss-key", default="last_loss", help="InfoBatchPrune.loss_key (InfoBatch: the latest loss)")
    parser.add_argument("--record-logits", action="store_true",
                        help="also record logits (InfoBatch needs only the loss; logits cost ~8%% per step here)")
    parser.add_argument("--reductions", nargs="+", default=["normalized"], choices=REDUCTIONS,
                        help="InfoBatch loss reduction(s); each gets its own random twin")
    parser.add_argument("--final-lr-decay", nargs=2, type=float, default=None, metavar=("EPOCHS", "FACTOR"),
                        help="also run every variant with lr x FACTOR in the last EPOCHS epochs")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--plot", default="docs/img/pruning_infobatch.png", help="PNG path ('' for none)")
    parser.add_argument("--json", default="")
    parser.add_argument("--quick", action="store_true", help="tiny: 2000 samples, 4 epochs, 1 seed, r=0.5")
    parser.add_argument("--from-json", default="", help="no training: table and plot from a --json file")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows = aggregate(saved["results"])
        print(table(rows))
        if args.plot:
            plot(rows, saved["results"], Path(args.plot), saved["config"]["epochs"])
        return {"results": saved["results"], "rows": rows}
    if args.quick:
        args.samples, args.epochs, args.seeds, args.ratios = 2000, 4, args.seeds[:1], args.ratios[:1]
        args.processes = 1
    single_thread()
    decay = None if args.final_lr_decay is None else [int(args.final_lr_decay[0]), args.final_lr_decay[1]]
    cfg = {"samples": args.samples, "epochs": args.epochs, "warmup": args.warmup, "loss_key": args.loss_key,
           "record_logits": args.record_logits, "final_lr_decay": decay}
    schedules = ["constant"] + (["decay"] if decay else [])
    jobs = [(seed, "infobatch", r, cfg, sch, red) for sch in schedules for red in args.reductions
            for r in args.ratios for seed in args.seeds]
    jobs += [(seed, "full", 0.0, cfg, sch) for sch in schedules for seed in args.seeds]
    print(f"# pruning: {len(jobs)} jobs on {machine()}, {args.processes} process(es); ratios {args.ratios}, "
          f"seeds {args.seeds}, {args.epochs} epochs", flush=True)
    start = time.perf_counter()
    results = [row for rows in run_parallel(run_job, jobs, args.processes) for row in rows]
    total = time.perf_counter() - start
    rows = aggregate(results)
    print()
    print(table(rows))
    print(f"\ntotal wall time {total / 60:.1f} min")
    if args.plot:
        plot(rows, results, Path(args.plot), args.epochs)
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": cfg, "results": results, "rows": rows}, indent=1))
    return {"results": results, "rows": rows}


if __name__ == "__main__":
    main()
