"""InfoBatch-style pruning vs full data vs uniform random pruning at the same budget.

    python benchmarks/pruning.py                      # 3 seeds, ratios 0.5 and 0.7
    python benchmarks/pruning.py --ratios 0.7 --seeds 0
    python benchmarks/pruning.py --final-lr-decay 8 0.5 --reductions normalized mean
                                                      # every variant also with lr x0.5 in the last 8 epochs
    python benchmarks/pruning.py --noise sym 0.2 --filter default --final-lr-decay 4 0.5 --schedules decay
                                                      # noisy labels: the noise filter, then InfoBatch
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

Noisy labels. ``--noise KIND RATE`` corrupts ``RATE`` of the training labels (``sym``, ``pair``
or ``inst``, drawn per seed by ``inject_label_noise``; the test labels stay clean), and
``--filter default`` adds the plan's default noise filter (``LossMarginFilter()``, its own
defaults: it is told neither the rate nor the kind; ``--filter agree10``: the earlier default
the committed noisy-label tables were run with). Arms (``--arms`` picks a subset):

* ``full`` and ``infobatch r`` (with its random twin) as above — both keep every mislabeled
  sample in the pool;
* ``filter`` — the noise filter alone (flagged samples are not streamed);
* ``filter+infobatch r`` — the filter, then InfoBatch among the samples it trusts
  (``CurationPlan(noise_filter=..., prune=...)``: pruning only among unflagged samples), with two
  twins at exactly its per-epoch budget: ``random-filter+infobatch`` (uniform random over *all*
  samples, the issue's control) and ``filter+random`` (the same filter, then uniform random
  among the samples it trusts: what the loss-based choice adds once the filter has acted).

Passes saved then come from both stages (probes, if a plan had them, count as passes). Rows
also give the share of sample passes spent on mislabeled samples and the precision / recall /
F1 of the final flags. A goal check follows the table: per method, the median over seeds of
per-seed differences (passes saved, last-5 accuracy vs full data and vs each twin).

Reported: last-epoch test accuracy (and, less noisy, the mean test accuracy of the last 5
epochs), sample passes, wall time and process CPU time of the training loop (the InfoBatch
rows include the ledger records and the per-epoch decision). Medians over seeds; each delta is
taken against the full-data run of the same seed.
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
    RECIPE,
    machine,
    make_split,
    markdown_table,
    median,
    num,
    pct,
    run_parallel,
    single_thread,
    train,
)

from curated_loader.curation import (
    REDUCTIONS,
    CurationPlan,
    Decision,
    InfoBatchPrune,
    LossMarginFilter,
)
from curated_loader.curation.decision import Reason

#: ``--noise`` kinds: short names as the noisy-label tables use them -> ``inject_label_noise`` kinds.
NOISE_KINDS = {"sym": "symmetric", "pair": "pairflip", "inst": "instance",
               "symmetric": "symmetric", "pairflip": "pairflip", "instance": "instance"}
_FLAGGED = [int(r) for r in Reason if r.flagged]
#: What ``--arms`` may choose (the job kinds of :func:`run_job`).
ARMS = ("full", "filter", "infobatch", "filter+infobatch")


class RandomBudget:
    """Duck-typed plan: epoch ``e`` keeps ``counts[e]`` samples drawn uniformly (weight 1).

    With ``within`` (a plan, e.g. the noise filter alone) the draw is uniform among the samples
    that plan keeps; should it keep fewer than ``counts[e]`` (its filter flagged more than the
    run being twinned), the rest are drawn uniformly from the others, so the budget is exact."""

    def __init__(self, num_samples: int, counts: list[int], seed: int, within: CurationPlan | None = None) -> None:
        self.num_samples = num_samples
        self.counts = counts
        self.within = within
        self.generator = torch.Generator().manual_seed(seed + 31337)

    def decide(self, ledger: Any, epoch: int) -> Decision:
        if self.within is None:
            decision = Decision.keep_all(self.num_samples, epoch)
            if epoch < len(self.counts) and self.counts[epoch] < self.num_samples:
                drop = torch.randperm(self.num_samples, generator=self.generator)[self.counts[epoch] :]
                decision.keep[drop] = False
                decision.weight[drop] = 0.0
            return decision
        decision = self.within.decide(ledger, epoch)
        if epoch < len(self.counts):
            # uniform priorities; samples outside ``keep`` come after every sample inside it
            priority = torch.rand(self.num_samples, generator=self.generator) + (~decision.keep).float()
            chosen = torch.zeros(self.num_samples, dtype=torch.bool)
            chosen[torch.argsort(priority)[: self.counts[epoch]]] = True
            decision.keep.copy_(chosen)
            decision.weight.copy_(chosen.float())
        return decision


def _counting(counts: list[int], noisy: list[int] | None = None, noise_mask: torch.Tensor | None = None):
    """Epoch-end hook: append each next epoch's kept count (and, given ``noise_mask``, how many
    of them are mislabeled) — the budget a random twin gets and the noise the stream carries."""

    def on_epoch_end(epoch, ledger, decision) -> None:
        counts.append(int(decision.keep.sum()))
        if noisy is not None and noise_mask is not None:
            noisy.append(int((decision.keep & noise_mask).sum()))

    return on_epoch_end


def _flag_quality(decision: Decision | None, noise_mask: torch.Tensor) -> dict[str, float]:
    """Precision / recall / F1 of the samples the last decision flagged, against the true mask."""
    if decision is None:
        return {}
    flagged = torch.isin(decision.reason.long(), torch.tensor(_FLAGGED))
    hits = int((flagged & noise_mask).sum())
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(noise_mask.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"flagged": int(flagged.sum()), "flag_precision": precision, "flag_recall": recall, "flag_f1": f1}


#: ``--filter`` choices: the plan's default noise filter with its own defaults (told neither the
#: noise rate nor its kind), or the earlier default the noisy-label pruning tables were run with
#: (margin mode needs AUM < 0 *and* p(clean) < 0.5; warm-up 10).
FILTERS = {
    "default": LossMarginFilter,
    "agree10": lambda: LossMarginFilter(margin_rule="agree", margin_threshold=0.0, warmup_epochs=10),
}


def _noise_filter(name: str) -> LossMarginFilter:
    """The noise filter ``--filter name`` runs."""
    return FILTERS[name]()


def run_job(seed: int, kind: str, ratio: float, cfg: dict[str, Any], schedule: str = "constant",
            reduction: str = "normalized") -> list[dict[str, Any]]:
    """``kind`` "full" -> one row; "infobatch" -> the InfoBatch row and its random twin;
    "filter" -> the default noise filter alone; "filter+infobatch" -> filter then InfoBatch
    among the samples it trusts, its uniform random twin (drawn from all samples) and its
    "filter+random" twin (the filter, then uniform random among the trusted samples), both at
    exactly its per-epoch budget. ``schedule`` "decay" applies ``cfg["final_lr_decay"]``;
    ``reduction`` is InfoBatch's."""
    single_thread()
    noise_kind, noise_rate = cfg.get("noise") or ("symmetric", 0.0)
    split = make_split(cfg["samples"], float(noise_rate), NOISE_KINDS[noise_kind], seed=seed)
    n, epochs = split.num_samples, cfg["epochs"]
    common = {"epochs": epochs, "seed": seed, "x_test": split.x_test, "y_test": split.y_test, "eval_every": 1,
              "final_lr_decay": tuple(cfg["final_lr_decay"]) if schedule == "decay" else None}
    noise_mask = split.noise_mask
    suffix = "" if reduction == "normalized" else f"-{reduction}"

    def curated(plan: CurationPlan, record_logits: bool) -> tuple[Any, list[int], list[int]]:
        counts, noisy = [n], [int(noise_mask.sum())]  # epoch 0 is always full
        run = train(split.x, split.y, plan=plan, on_epoch_end=_counting(counts, noisy, noise_mask),
                    record_logits=record_logits, **common)
        return run, counts, noisy

    def twin(counts: list[int], within: CurationPlan | None = None) -> tuple[Any, list[int]]:
        noisy = [int(noise_mask.sum())]
        run = train(split.x, split.y, plan=RandomBudget(n, counts, seed, within), track=within is not None,
                    on_epoch_end=_counting([], noisy, noise_mask), **common)
        return run, noisy

    def prune() -> InfoBatchPrune:
        return InfoBatchPrune(ratio=ratio, warmup_epochs=cfg["warmup"], loss_key=cfg["loss_key"])

    if kind == "full":
        run = train(split.x, split.y, **common)
        rows = [("full", 0.0, run, [int(noise_mask.sum())] * (epochs + 1))]
    elif kind == "filter":
        run, _, noisy = curated(CurationPlan(noise_filter=_noise_filter(cfg.get("filter", "default")), seed=seed, num_epochs=epochs), True)
        rows = [("filter", 0.0, run, noisy)]
    elif kind == "infobatch":
        plan = CurationPlan(prune=prune(), seed=seed, num_epochs=epochs, reduction=reduction)
        infobatch, counts, noisy = curated(plan, cfg["record_logits"])
        random_run, random_noisy = twin(counts)
        assert random_run.sample_passes == infobatch.sample_passes, (random_run.sample_passes, infobatch.sample_passes)
        rows = [("infobatch" + suffix, ratio, infobatch, noisy), ("random" + suffix, ratio, random_run, random_noisy)]
    elif kind == "filter+infobatch":
        plan = CurationPlan(noise_filter=_noise_filter(cfg.get("filter", "default")), prune=prune(), seed=seed, num_epochs=epochs,
                            reduction=reduction)
        both, counts, noisy = curated(plan, True)
        random_run, random_noisy = twin(counts)
        filtered_random, filtered_noisy = twin(counts, CurationPlan(noise_filter=_noise_filter(cfg.get("filter", "default")), seed=seed,
                                                                    num_epochs=epochs))
        for run in (random_run, filtered_random):
            assert run.sample_passes == both.sample_passes, (run.sample_passes, both.sample_passes)
        rows = [("filter+infobatch" + suffix, ratio, both, noisy), ("random-filter+infobatch" + suffix, ratio,
                random_run, random_noisy), ("filter+random" + suffix, ratio, filtered_random, filtered_noisy)]
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    out = []
    for method, r, run, noisy in rows:
        last5 = [h["test_acc"] for h in run.history[-5:]]
        row = {"seed": seed, "method": method, "ratio": r, "schedule": schedule, "test_acc": run.test_acc,
               "test_acc_last5": sum(last5) / len(last5), "passes": run.sample_passes,
               "seconds": run.train_seconds, "cpu_seconds": run.cpu_seconds}
        if noise_rate:
            row["noisy_passes"] = int(sum(noisy[:epochs]))  # mislabeled samples streamed, all epochs
            if method.startswith("filter"):
                row.update(_flag_quality(run.decision, noise_mask))
        out.append(row)
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
    keys = sorted({(r["method"], r["ratio"]) for r in results}, key=lambda k: (k[1], _rank(k[0]), k[0]))
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
        if any("noisy_passes" in r for r in cell):
            rows[-1]["noisy_share"] = median([r["noisy_passes"] / r["passes"] for r in cell])
        for field in ("flag_precision", "flag_recall", "flag_f1"):
            if any(field in r for r in cell):
                rows[-1][field] = median([r[field] for r in cell])
    return rows


#: Table order of the methods (within a ratio); names not listed come after, alphabetically.
_ORDER = ("full", "filter", "filter+infobatch", "random-filter+infobatch", "filter+random", "infobatch", "random")


def _rank(method: str) -> int:
    base = method if method in _ORDER else method.rpartition("-")[0] or method
    return _ORDER.index(base) if base in _ORDER else len(_ORDER)


def display_name(method: str, ratio: float) -> str:
    """The table's name of a method key (``random-mean``: the random twin of InfoBatch with the
    ``mean`` reduction; ``random-filter+infobatch``: the uniform random twin of filter + InfoBatch)."""
    if method == "full":
        return "full data"
    if method == "filter":
        return "noise filter only"
    head, _, reduction = method.partition("-")
    if head == "random" and reduction.startswith("filter+infobatch"):
        return f"uniform random r={ratio:g} (twin of filter + InfoBatch)"
    if head == "filter+random":
        return f"filter + uniform random r={ratio:g} (twin of filter + InfoBatch)"
    name = {"infobatch": "InfoBatch", "filter+infobatch": "filter + InfoBatch"}.get(head, "uniform random")
    return f"{name} r={ratio:g}" + (f" (twin of {reduction})" if head == "random" and reduction
                                    else f" ({reduction})" if reduction else "")


def _paired_last5(runs: list[dict[str, Any]], others: list[dict[str, Any] | None]) -> float:
    """Median over seeds of ``run - other`` last-5 accuracy (pairs without ``other`` skipped)."""
    return median([r["test_acc_last5"] - o["test_acc_last5"] for r, o in zip(runs, others) if o is not None])


def goal_check(results: list[dict[str, Any]]) -> str:
    """The issue's goal per pruning method and schedule, each figure the median over seeds of a
    per-seed difference: passes saved vs full data (goal ≥ 35%), last-5 accuracy vs full data of
    the same schedule (goal ≥ -0.3 pts) and vs its uniform random twin at the same budget (goal
    ≥ +0.3 pts); for filter + InfoBatch also vs the filter + random twin (no goal: it tells what
    the loss-based choice adds once the filter has acted)."""
    header = ["lr schedule", "method", "seeds", "passes saved", "last-5 Δ vs full (pts)",
              "last-5 Δ vs uniform random twin (pts)", "last-5 Δ vs filter + random twin (pts)", "goal met"]
    body = []
    for schedule in sorted({r.get("schedule", "constant") for r in results}):
        runs = {(r["seed"], r["method"], r["ratio"]): r for r in results if r.get("schedule", "constant") == schedule}
        full = {seed: r for (seed, method, _), r in runs.items() if method == "full"}
        for method, ratio in sorted({(m, q) for _, m, q in runs if m.partition("-")[0] in ("infobatch", "filter+infobatch")},
                                    key=lambda k: (k[1], _rank(k[0]), k[0])):
            head, _, reduction = method.partition("-")
            twin_key = "random-" + method if head == "filter+infobatch" else "random" + (f"-{reduction}" if reduction else "")
            seeds = sorted(seed for (seed, m, q) in runs if (m, q) == (method, ratio) and seed in full)
            mine = [runs[(s, method, ratio)] for s in seeds]
            saved = median([1 - r["passes"] / full[s]["passes"] for s, r in zip(seeds, mine)])
            vs_full = _paired_last5(mine, [full[s] for s in seeds])
            vs_twin = _paired_last5(mine, [runs.get((s, twin_key, ratio)) for s in seeds])
            vs_filtered = float("nan")
            if head == "filter+infobatch":
                other = "filter+random" + (f"-{reduction}" if reduction else "")
                vs_filtered = _paired_last5(mine, [runs.get((s, other, ratio)) for s in seeds])
            met = saved >= 0.35 and vs_full >= -0.003 and vs_twin >= 0.003
            body.append([schedule, display_name(method, ratio), len(seeds), pct(saved), f"{100 * vs_full:+.2f}",
                         f"{100 * vs_twin:+.2f}", "–" if math.isnan(vs_filtered) else f"{100 * vs_filtered:+.2f}",
                         "**yes**" if met else "no"])
    return markdown_table(header, body)


def table(rows: list[dict[str, Any]]) -> str:
    header = ["lr schedule", "method", "test acc", "Δ acc vs full (pts)", "last-5 mean acc (Δ)", "sample passes",
              "passes saved", "wall time (saved)", "CPU time (saved)"]
    noisy = any("noisy_share" in r for r in rows)
    if noisy:
        header += ["mislabeled share of passes", "flag P / R / F1"]
    body = []
    for r in rows:
        full = r["method"] == "full"
        body.append([r.get("schedule", "constant"),
            display_name(r["method"], r["ratio"]), pct(r["test_acc"], 2), "–" if full else f"{100 * r['delta_acc']:+.2f}",
            pct(r["test_acc_last5"], 2) + ("" if full else f" ({100 * r['delta_acc_last5']:+.2f})"),
            f"{r['passes'] / 1e6:.3f} M", "–" if full else pct(r["saved_passes"]),
            f"{r['seconds']:.1f} s" + ("" if full else f" ({pct(r['saved_time'])})"),
            f"{r['cpu_seconds']:.1f} s" + ("" if full else f" ({pct(r['saved_cpu'])})"),
        ])
        if noisy:
            body[-1] += [pct(r.get("noisy_share", float("nan"))),
                         " / ".join(num(r[f], 2) for f in ("flag_precision", "flag_recall", "flag_f1")) if "flag_f1" in r else "–"]
    return markdown_table(header, body)


def plot(rows: list[dict[str, Any]], results: list[dict[str, Any]], path: Path, epochs: int, data: str = "Clean MNIST-1D") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    palette = {"full": "k", "infobatch": "tab:blue", "random": "tab:orange", "filter": "tab:green",
               "filter+infobatch": "tab:purple", "random-filter+infobatch": "tab:red", "filter+random": "tab:brown"}

    def color(method: str) -> str:
        return palette.get(method, palette.get(method.split("-")[0], "tab:gray"))

    results = [r for r in results if r.get("schedule", "constant") == rows[0].get("schedule", "constant")]
    rows = [r for r in rows if r.get("schedule", "constant") == rows[0].get("schedule", "constant")]
    markers = {0.0: "o"}
    for r in results:
        marker = markers.setdefault(r["ratio"], "osD^v"[len(markers) % 5])
        axes[0].scatter(r["passes"] / 1e6, 100 * r["test_acc"], color=color(r["method"]), marker=marker, alpha=0.35, s=18)
    for r in rows:
        marker = markers[r["ratio"]]
        label = display_name(r["method"], r["ratio"])
        axes[0].scatter(r["passes"] / 1e6, 100 * r["test_acc"], color=color(r["method"]), marker=marker, s=70,
                        edgecolor="k", label=label)
    axes[0].set_xlabel("sample passes (millions)")
    axes[0].set_ylabel("test accuracy, last epoch (%)")
    axes[0].set_title("accuracy vs compute (small: seeds, large: median)")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    short = {"full": "full", "filter": "filter", "infobatch": "IB", "random": "rand", "filter+infobatch": "F+IB",
             "filter+random": "F+rand", "random-filter+infobatch": "rand(F+IB)"}
    names = [r["method"] if r["method"] in ("full", "filter") else
             f"{short.get(r['method'], r['method'][:6])} {r['ratio']:g}" for r in rows]
    xs = np.arange(len(rows))
    # wall time is left out of the plot: on a shared machine it follows the other load more than
    # the run (the table has it); the process CPU time of one-thread runs is the steadier measure
    for k, (field, label) in enumerate((("saved_passes", "sample passes saved"), ("saved_cpu", "CPU time saved"))):
        axes[1].bar(xs + (k - 0.5) * 0.4, [100 * r[field] if r["method"] != "full" else 0 for r in rows], 0.4, label=label)
    axes[1].axhline(40, color="tab:blue", ls=":", lw=1)
    axes[1].axhline(35, color="tab:orange", ls=":", lw=1)
    axes[1].set_xticks(xs, names, fontsize=8, rotation=30 if len(rows) > 5 else 0)
    axes[1].set_ylabel("% saved vs full data (median)")
    axes[1].set_title("savings vs full data (goals: 40% passes, 35% time)")
    axes[1].legend(fontsize=8)
    axes[1].grid(axis="y", alpha=0.3)
    fig.suptitle(f"{data}, {epochs} epochs: InfoBatch-style pruning vs uniform random at the same budget")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def data_label(cfg: dict[str, Any]) -> str:
    """"Clean MNIST-1D" or e.g. "MNIST-1D, symmetric noise 20%" for plot titles."""
    noise = cfg.get("noise")
    return "Clean MNIST-1D" if not noise or not float(noise[1]) else \
        f"MNIST-1D, {NOISE_KINDS[noise[0]]} noise {100 * float(noise[1]):g}%"


def report(results: list[dict[str, Any]], cfg: dict[str, Any], plot_path: str) -> list[dict[str, Any]]:
    """Print the table and the goal check; write the plot (``plot_path`` '' for none)."""
    rows = aggregate(results)
    print(table(rows))
    print()
    print(goal_check(results))
    if plot_path:
        plot(rows, results, Path(plot_path), cfg["epochs"], data_label(cfg))
        print(f"plot: {plot_path}")
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.7], help="InfoBatch prune ratios")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=None, help="MNIST-1D samples, 80%% train (default 20000)")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {RECIPE['epochs']}")
    parser.add_argument("--warmup", type=int, default=1, help="InfoBatchPrune.warmup_epochs")
    parser.add_argument("--loss-key", default="last_loss", help="InfoBatchPrune.loss_key (InfoBatch: the latest loss)")
    parser.add_argument("--record-logits", action="store_true",
                        help="also record logits (InfoBatch needs only the loss; logits cost ~8%% per step here)")
    parser.add_argument("--reductions", nargs="+", default=["normalized"], choices=REDUCTIONS,
                        help="InfoBatch loss reduction(s); each gets its own random twin")
    parser.add_argument("--final-lr-decay", nargs=2, type=float, default=None, metavar=("EPOCHS", "FACTOR"),
                        help="also run every variant with lr x FACTOR in the last EPOCHS epochs")
    parser.add_argument("--schedules", nargs="+", choices=("constant", "decay"), default=None,
                        help="which schedules to run (default: constant, and decay when --final-lr-decay is given)")
    parser.add_argument("--noise", nargs=2, default=None, metavar=("KIND", "RATE"),
                        help=f"corrupt RATE of the training labels; KIND one of {', '.join(NOISE_KINDS)}")
    parser.add_argument("--filter", choices=("none", *FILTERS), default="none",
                        help="default: also run the plan's default noise filter alone and filter + InfoBatch "
                             "(with its uniform random and filter + random twins); agree10: the same with the "
                             "earlier default filter (margin rule 'agree', warm-up 10)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=None,
                        help="run only these arms (default: full and infobatch, plus filter and filter+infobatch "
                             "with --filter default); random twins come with their pruning arm")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--plot", default="docs/img/pruning_infobatch.png", help="PNG path ('' for none)")
    parser.add_argument("--json", default="")
    parser.add_argument("--quick", action="store_true",
                        help="tiny: 2000 samples, 4 epochs (unless given), 1 seed, the first ratio")
    parser.add_argument("--from-json", nargs="+", default=[],
                        help="no training: table and plot from --json file(s) of one configuration")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = [json.loads(Path(f).read_text()) for f in args.from_json]
        results = [r for s in saved for r in s["results"]]
        return {"results": results, "rows": report(results, saved[0]["config"], args.plot)}
    if args.noise is not None:
        if args.noise[0] not in NOISE_KINDS:
            parser.error(f"--noise KIND must be one of {', '.join(NOISE_KINDS)}, got {args.noise[0]!r}")
        try:
            rate = float(args.noise[1])
        except ValueError:
            parser.error(f"--noise RATE must be a number in [0, 1), got {args.noise[1]!r}")
        if not 0.0 <= rate < 1.0:
            parser.error(f"--noise RATE must lie in [0, 1), got {rate}")
    if args.quick:
        args.seeds, args.ratios, args.processes = args.seeds[:1], args.ratios[:1], 1
        args.samples = args.samples or 2000
        args.epochs = args.epochs or 4
    args.samples = args.samples or 20000
    args.epochs = args.epochs or RECIPE["epochs"]
    single_thread()
    decay = None if args.final_lr_decay is None else [int(args.final_lr_decay[0]), args.final_lr_decay[1]]
    cfg = {"samples": args.samples, "epochs": args.epochs, "warmup": args.warmup, "loss_key": args.loss_key,
           "record_logits": args.record_logits, "final_lr_decay": decay}
    if args.noise is not None:
        cfg["noise"] = [args.noise[0], float(args.noise[1])]
        cfg["filter"] = args.filter
    schedules = args.schedules or ["constant"] + (["decay"] if decay else [])
    if "decay" in schedules and decay is None:
        parser.error("--schedules decay needs --final-lr-decay EPOCHS FACTOR")
    arms = args.arms or [arm for arm in ARMS if args.filter != "none" or not arm.startswith("filter")]
    if args.filter == "none" and any(arm.startswith("filter") for arm in arms):
        parser.error("--arms filter / filter+infobatch need --filter default (or agree10)")
    jobs = [(seed, kind, r, cfg, sch, red) for sch in schedules for red in args.reductions
            for r in args.ratios for kind in ("infobatch", "filter+infobatch") if kind in arms for seed in args.seeds]
    jobs += [(seed, kind, 0.0, cfg, sch) for sch in schedules for seed in args.seeds
             for kind in ("full", "filter") if kind in arms]
    print(f"# pruning: {len(jobs)} jobs on {machine()}, {args.processes} process(es); ratios {args.ratios}, "
          f"seeds {args.seeds}, {args.epochs} epochs, {data_label(cfg)}", flush=True)
    start = time.perf_counter()
    results = [row for rows in run_parallel(run_job, jobs, args.processes) for row in rows]
    total = time.perf_counter() - start
    print()
    rows = report(results, cfg, args.plot)
    print(f"\ntotal wall time {total / 60:.1f} min")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": cfg, "results": results, "rows": rows}, indent=1))
    return {"results": results, "rows": rows}


if __name__ == "__main__":
    main()
