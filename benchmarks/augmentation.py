"""Adaptive augmentation on clean MNIST-1D: test accuracy of three arms, and what the
augmentation costs on each path.

    python benchmarks/augmentation.py                       # 20 000 samples, 60 epochs, seeds 0 1 2
    python benchmarks/augmentation.py --seeds 0 1 2 3 4 --extra-fixed 0.25 1.0 \
        --extra-adaptive easy_strong:0.25:0.75 hard_strong:0:1      # + a sensitivity sweep
    python benchmarks/augmentation.py --quick               # tiny, for the test suite
    python benchmarks/augmentation.py --report a.json b.json  # tables + plot of saved runs (--json)

Accuracy. The reference recipe (``Signal1DCNN``, Adam, lr 1e-2, batch 256, 60 epochs;
16 000 training / 4 000 clean test samples) trained from in-memory tensors, three arms with
the same initialization and shuffling per seed:

* ``none``      — no augmentation;
* ``fixed``     — the signal Compose (``signal_augment()``, the same members and maxima as
  ``conf/augment/signal_default.yaml``) at one constant strength for every sample and epoch
  (``--fixed-strength``, default 0.5: the middle of the range, and the mean strength the
  adaptive arm hands out, so the two arms spend the same augmentation budget);
* ``adaptive``  — the same Compose at a per-sample strength the curation plan decides each
  epoch: ``CurationPlan(augment=AugmentStrength(...))`` reads the ledger, which records every
  step's per-sample loss (``mapping="easy_strong"``, strength in [0, 1] by default).

Every augmented batch goes through the batched device path,
``augment_batch(aug, x, strength[ids], ids, epoch, seed)``, inside the training loop. The
tables give the median test accuracy over seeds (final epoch, no early stopping), the mean
over the evaluations in the last sixth of training (steadier than one epoch), and per-seed
differences between arms (same seed: same initialization and sample order).

Cost. The per-sample worker path, ``aug(sample, strength)``, timed over many samples; the
batched path, ``aug.batch`` and ``augment_batch`` (which adds the seed hashing), on one batch
of 256; and one training step (forward, per-sample loss, ``Ledger.record``, backward, Adam)
on the same batch. Batched and training-step timings alternate, so load on a shared machine
hits both alike; medians of wall-clock and process CPU time.

Every process should use one torch thread (``single_thread()`` is called first): for this
tiny CNN two threads on a shared 2-core machine are many times slower. Figures and verdicts:
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RECIPE, make_split, single_thread

from curated_loader.augment import (
    AmplitudeScale,
    Compose,
    GaussianNoise,
    SeededAugment,
    Shift,
    TimeStretch,
    augment_batch,
    fold_in,
    sample_seed,
)
from curated_loader.curation import AugmentStrength, CurationPlan, Ledger
from curated_loader.models import Signal1DCNN

NUM_CLASSES = 10
ROOT = Path(__file__).resolve().parents[1]


def signal_augment(field: str = "x") -> Compose:
    """The signal Compose of ``conf/augment/signal_default.yaml``: circular shift by up to 4
    steps, amplitude ×(1 ± 0.2), time-stretch ×(1 ± 0.1), Gaussian noise σ ≤ 0.05 (the
    signals have unit standard deviation), each at ``strength`` times its maximum."""
    return Compose([
        Shift(max_shift=4, mode="circular", field=field),
        AmplitudeScale(a_max=0.2, field=field),
        TimeStretch(s_max=0.1, field=field),
        GaussianNoise(sigma_max=0.05, field=field),
    ])


# -- arms ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One training configuration: ``kind`` is ``none``, ``fixed`` or ``adaptive``."""

    name: str
    kind: str
    strength: float = 0.0  # fixed
    mapping: str = "easy_strong"  # adaptive
    min_strength: float = 0.0
    max_strength: float = 1.0

    def plan(self, seed: int, epochs: int) -> CurationPlan | None:
        if self.kind != "adaptive":
            return None
        policy = AugmentStrength(
            mapping=self.mapping, min_strength=self.min_strength, max_strength=self.max_strength, warmup_epochs=0
        )
        return CurationPlan(augment=policy, seed=seed, num_epochs=epochs)


@dataclass
class RunResult:
    arm: str
    seed: int
    test_acc: float
    train_seconds: float  # the training loop, evaluation excluded
    epochs: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, test accuracy)
    strength: list[dict[str, float]] = field(default_factory=list)  # per epoch: mean, p10, p90


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    model.train()
    return float((pred == y).float().mean())


def _strength_summary(strength: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(strength.float(), torch.tensor([0.1, 0.5, 0.9]))
    return {"mean": float(strength.mean()), "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2])}


def train_arm(
    split: Any, arm: Arm, seed: int, *, epochs: int, lr: float, batch_size: int, eval_every: int = 0,
    aug: SeededAugment | None = None,
) -> RunResult:
    """Train ``Signal1DCNN`` with Adam on the split's training set under ``arm``."""
    aug = aug if aug is not None else signal_augment()
    x, y = split.x, split.y
    n = len(y)
    torch.manual_seed(seed)
    model = Signal1DCNN(length=x.shape[-1], num_classes=NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed + 7919)
    plan = arm.plan(seed, epochs)
    ledger = Ledger(n, num_classes=NUM_CLASSES) if plan is not None else None
    if plan is not None:
        decision = plan.decide(ledger, 0)  # nothing seen yet: every sample at the mid strength
        strength = decision.strength
    elif arm.kind == "fixed":
        strength = torch.full((n,), float(arm.strength))
    else:
        strength = None
    result = RunResult(arm.name, seed, float("nan"), 0.0, epochs)
    for epoch in range(epochs):
        if strength is not None:
            result.strength.append(_strength_summary(strength))
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        if ledger is not None:
            ledger.set_epoch(epoch)
        for begin in range(0, n, batch_size):
            ids = order[begin : begin + batch_size]
            xb, yb = x[ids], y[ids]
            if strength is not None:
                xb = augment_batch(aug, xb, strength[ids], ids, epoch, seed)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, reduction="none")
            if ledger is not None:
                ledger.record(ids, loss.detach(), logits.detach(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimizer.step()
        if plan is not None:
            decision = plan.decide(ledger, epoch + 1)
            if not bool(decision.keep.all()):  # strength only: no sample may be dropped
                raise RuntimeError("the augmentation plan dropped samples")
            strength = decision.strength
        result.train_seconds += time.perf_counter() - start
        if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            result.curve.append((epoch + 1, accuracy(model, split.x_test, split.y_test)))
    result.test_acc = result.curve[-1][1] if result.curve else accuracy(model, split.x_test, split.y_test)
    return result


# -- cost ----------------------------------------------------------------------------------
def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def worker_path_cost(aug: SeededAugment, x: torch.Tensor, strength: float, num_samples: int, repeats: int) -> dict[str, float]:
    """Seconds per sample of ``aug(sample, strength)`` on loader-style sample dicts (the
    fields a worker hands it: the decoded tensor plus ``__id__``, ``__epoch__``, ``__seed__``)."""
    samples = [
        {"x": x[i % len(x)], "__id__": i, "__epoch__": 3, "__seed__": 0, "__repeat__": 0} for i in range(num_samples)
    ]
    for sample in samples[: min(50, num_samples)]:  # warm-up
        aug(sample, strength)
    walls, cpus = [], []
    for _ in range(repeats):
        start = _clock()
        for sample in samples:
            aug(sample, strength)
        wall, cpu = _since(start)
        walls.append(wall / num_samples)
        cpus.append(cpu / num_samples)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


def batched_and_step_cost(
    aug: SeededAugment, x: torch.Tensor, y: torch.Tensor, strength: float, batch_size: int, repeats: int, lr: float,
    members: Sequence[tuple[str, SeededAugment]] = (),
) -> dict[str, dict[str, float]]:
    """Median seconds of ``aug.batch`` (seeds precomputed), ``augment_batch`` (seeds hashed
    from ids) and of one training step, interleaved, on one batch of ``batch_size``."""
    ids = torch.arange(batch_size, dtype=torch.int64)
    xb, yb = x[:batch_size].clone(), y[:batch_size].clone()
    s = torch.full((batch_size,), float(strength))
    seeds = sample_seed(0, 3, ids)
    torch.manual_seed(0)
    model = Signal1DCNN(length=x.shape[-1], num_classes=NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ledger = Ledger(len(x), num_classes=NUM_CLASSES)

    def step() -> None:
        logits = model(xb)
        loss = F.cross_entropy(logits, yb, reduction="none")
        ledger.record(ids, loss.detach(), logits.detach(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()

    tasks: dict[str, Callable[[], Any]] = {
        "batch": lambda: aug.batch(xb, s, seeds),
        "augment_batch": lambda: augment_batch(aug, xb, s, ids, 3, 0),
        "step": step,
        "sample_seed": lambda: sample_seed(0, 3, ids),
        "fold_in": lambda: fold_in(seeds, 1),
    }
    for name, member in members:
        tasks[f"member:{name}"] = functools.partial(member.batch, xb, s, seeds)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in tasks}
    for _ in range(3):  # warm-up
        for fn in tasks.values():
            fn()
    for _ in range(repeats):
        for name, fn in tasks.items():
            start = _clock()
            fn()
            wall, cpu = _since(start)
            times[name][0].append(wall)
            times[name][1].append(cpu)
    return {
        name: {"wall": statistics.median(w), "cpu": statistics.median(c), "ops": op_count(tasks[name])}
        for name, (w, c) in times.items()
    }


def op_count(fn: Callable[[], Any]) -> int:
    """Top-level torch operator calls one call of ``fn`` makes (each is one kernel launch
    or more: a small batch's cost is mostly their per-call overhead)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.cpu_parent is None)


def measure_cost(split: Any, args: argparse.Namespace) -> dict[str, Any]:
    aug = signal_augment()
    members = [(type(m).__name__, m) for m in aug.augs]
    batched = batched_and_step_cost(
        aug, split.x, split.y, args.fixed_strength, args.batch_size, args.cost_repeats, args.lr, members
    )
    worker = {"Compose": worker_path_cost(aug, split.x, args.fixed_strength, args.worker_samples, args.worker_repeats)}
    for name, member in members:
        worker[name] = worker_path_cost(member, split.x, args.fixed_strength, args.worker_samples, args.worker_repeats)
    return {"batched": batched, "worker": worker, "batch_size": args.batch_size}


# -- reporting -----------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def accuracy_table(arms: Sequence[Arm], results: Sequence[RunResult], reference: str = "none") -> str:
    by_arm = {arm.name: [r for r in results if r.arm == arm.name] for arm in arms}
    ref = _median([r.test_acc for r in by_arm.get(reference, [])])
    ref_tail = _median([tail_mean(r) for r in by_arm.get(reference, [])])
    rows = []
    for arm in arms:
        runs = by_arm[arm.name]
        accs = [r.test_acc for r in runs]
        med = _median(accs)
        strengths = [statistics.fmean(e["mean"] for e in r.strength) for r in runs if r.strength]
        per_epoch = _median([r.train_seconds / r.epochs for r in runs])
        tail = _median([tail_mean(r) for r in runs])
        rows.append([
            arm.name, describe(arm), f"{100 * med:.2f}%", f"{100 * (med - ref):+.2f}",
            " ".join(f"{100 * a:.2f}" for a in accs),
            f"{100 * min(accs):.2f}–{100 * max(accs):.2f}" if accs else "–",
            "–" if math.isnan(tail) else f"{100 * tail:.2f}%", "–" if math.isnan(tail) else f"{100 * (tail - ref_tail):+.2f}",
            f"{_median(strengths):.3f}" if strengths else "0",
            f"{per_epoch:.2f}",
        ])
    header = ["arm", "augmentation", "test acc (median)", f"Δ vs {reference} (pp)", "per seed (%)", "range (%)",
              "last-sixth mean (median)", f"Δ vs {reference} (pp) ", "mean strength", "train s / epoch"]
    return markdown_table(header, rows)


def paired_table(arms: Sequence[Arm], results: Sequence[RunResult], references: Sequence[str] = ("none", "fixed")) -> str:
    """Per-seed differences against the reference arms (same seed = same initialization and
    sample order, so the pairs share everything but the augmentation): median difference and
    the number of seeds on which the arm is better / tied / worse, for the final accuracy and
    for the last-sixth mean."""
    acc = {(r.arm, r.seed): r for r in results}
    header = ["arm"]
    for ref in references:
        header += [f"final: Δ vs {ref} (pp, median)", "better/tie/worse", f"last-sixth: Δ vs {ref} (pp, median)",
                   "better/tie/worse "]
    rows = []
    for arm in arms:
        if arm.name == references[0]:
            continue
        row: list[Any] = [arm.name]
        for ref in references:
            seeds = sorted(s for (name, s) in acc if name == arm.name and (ref, s) in acc)
            if ref == arm.name or not seeds:
                row += ["–"] * 4
                continue
            for metric in (lambda r: r.test_acc, tail_mean):
                diffs = [metric(acc[arm.name, s]) - metric(acc[ref, s]) for s in seeds]
                wins = sum(d > 1e-9 for d in diffs)
                losses = sum(d < -1e-9 for d in diffs)
                row += [f"{100 * _median(diffs):+.2f}", f"{wins}/{len(diffs) - wins - losses}/{losses}"]
        rows.append(row)
    return markdown_table(header, rows)


def tail_mean(run: RunResult) -> float:
    """Mean test accuracy over the evaluations in the last sixth of training (epochs 50, 55
    and 60 of 60 with ``--eval-every 5``): less noisy than the final epoch alone."""
    start = run.epochs - run.epochs // 6
    points = [acc for epoch, acc in run.curve if epoch >= start] or [run.test_acc]
    return statistics.fmean(points)


def describe(arm: Arm) -> str:
    if arm.kind == "none":
        return "none"
    if arm.kind == "fixed":
        return f"Compose, strength {arm.strength:g} for all"
    return f"Compose, AugmentStrength({arm.mapping}, [{arm.min_strength:g}, {arm.max_strength:g}])"


def cost_tables(cost: dict[str, Any]) -> tuple[str, str]:
    b = cost["batch_size"]
    batched, worker = cost["batched"], cost["worker"]
    rows = []
    for name in ["Compose"] + [k.split(":", 1)[1] for k in batched if k.startswith("member:")]:
        per_batch = batched["batch" if name == "Compose" else f"member:{name}"]
        rows.append([
            name, f"{1e6 * worker[name]['wall']:.1f}", f"{1e6 * worker[name]['cpu']:.1f}",
            f"{1e6 * per_batch['wall']:.0f}", f"{1e6 * per_batch['wall'] / b:.2f}",
            f"{worker[name]['wall'] / (per_batch['wall'] / b):.0f}×", per_batch["ops"],
        ])
    per_sample = markdown_table(
        ["augmentation", "worker path µs/sample (wall)", "worker path µs/sample (CPU)", f"batched µs / batch of {b}",
         "batched µs/sample", "worker ÷ batched", "torch ops / batched call"],
        rows,
    )
    step, full = batched["step"], batched["augment_batch"]

    def row(label: str, t: dict[str, float]) -> list[Any]:
        return [label, f"{1e3 * t['wall']:.3f}", f"{1e3 * t['cpu']:.3f}", t["ops"]]

    frac_rows = [
        row(f"`augment_batch` (seeds + `aug.batch`), batch {b}", full),
        row(f"… of which `aug.batch` (the Compose), batch {b}", batched["batch"]),
        row("… of which `sample_seed` (ids → seeds)", batched["sample_seed"]),
        row("one `fold_in` (the Compose makes one per member)", batched["fold_in"]),
        row(f"training step (fwd, loss, `Ledger.record`, bwd, Adam), batch {b}", step),
        ["**device path ÷ training step**", f"**{100 * full['wall'] / step['wall']:.1f}%**",
         f"**{100 * full['cpu'] / step['cpu']:.1f}%**", f"{full['ops'] / max(step['ops'], 1):.1f}×"],
    ]
    fraction = markdown_table(["", "wall (ms)", "CPU (ms)", "torch ops"], frac_rows)
    return per_sample, fraction


def plot(path: Path, arms: Sequence[Arm], results: Sequence[RunResult], cost: dict[str, Any] | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {arm.name: f"C{i}" for i, arm in enumerate(arms)}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    ax = axes[0, 0]
    for arm in arms:
        runs = [r for r in results if r.arm == arm.name and r.curve]
        if not runs:
            continue
        epochs = [e for e, _ in runs[0].curve]
        med = [_median([r.curve[i][1] for r in runs]) for i in range(len(epochs))]
        ax.plot(epochs, [100 * m for m in med], "-o", ms=3, color=colors[arm.name], label=arm.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%), median over seeds")
    ax.set_title("test accuracy during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    finals = [100 * r.test_acc for r in results]
    if len(finals) > 1 and max(finals) > 0:
        ax.set_ylim(max(0.0, min(finals) - 4), min(100.0, max(finals) + 1))

    ax = axes[0, 1]
    for i, arm in enumerate(arms):
        accs = [100 * r.test_acc for r in results if r.arm == arm.name]
        ax.scatter([i] * len(accs), accs, color=colors[arm.name], alpha=0.7, zorder=3)
        if accs:
            ax.hlines(_median(accs), i - 0.3, i + 0.3, color=colors[arm.name], lw=2.5)
    ax.set_xticks(range(len(arms)), [arm.name.replace(" [", "\n[").replace(" ", "\n", 1) for arm in arms], fontsize=7.5)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("final accuracy per seed (bar: median)")
    ax.grid(alpha=0.3, axis="y")

    ax = axes[1, 0]
    for arm in arms:
        runs = [r for r in results if r.arm == arm.name and r.strength]
        if not runs:
            continue
        epochs = list(range(len(runs[0].strength)))
        mean = [_median([r.strength[e]["mean"] for r in runs]) for e in epochs]
        ax.plot(epochs, mean, color=colors[arm.name], label=f"{arm.name}: mean")
        if arm.kind == "adaptive":
            p10 = [_median([r.strength[e]["p10"] for r in runs]) for e in epochs]
            p90 = [_median([r.strength[e]["p90"] for r in runs]) for e in epochs]
            ax.fill_between(epochs, p10, p90, color=colors[arm.name], alpha=0.15, label=f"{arm.name}: 10–90th pct")
    ax.set_xlabel("epoch")
    ax.set_ylabel("augmentation strength")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("per-sample strength handed out (median over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)

    ax = axes[1, 1]
    if cost is not None:
        b = cost["batch_size"]
        names = ["Compose"] + [k.split(":", 1)[1] for k in cost["batched"] if k.startswith("member:")]
        worker = [1e6 * cost["worker"][n]["wall"] for n in names]
        batched = [1e6 * cost["batched"]["batch" if n == "Compose" else f"member:{n}"]["wall"] / b for n in names]
        pos = range(len(names))
        ax.bar([p - 0.2 for p in pos], worker, 0.4, label="worker path, per sample")
        ax.bar([p + 0.2 for p in pos], batched, 0.4, label=f"batched path (batch {b}), per sample")
        ax.set_yscale("log")
        ax.set_xticks(list(pos), names, fontsize=8)
        ax.set_ylabel("µs per sample (wall)")
        step = cost["batched"]["step"]["wall"]
        frac = cost["batched"]["augment_batch"]["wall"] / step
        ax.set_title(f"augmentation cost (device path = {100 * frac:.1f}% of a step)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    else:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    import os

    return (f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)")


# -- main ----------------------------------------------------------------------------------
def build_arms(args: argparse.Namespace) -> list[Arm]:
    arms = [
        Arm("none", "none"),
        Arm("fixed", "fixed", strength=args.fixed_strength),
        Arm("adaptive", "adaptive", mapping=args.mapping, min_strength=args.min_strength, max_strength=args.max_strength),
    ]
    for s in args.extra_fixed:
        arms.append(Arm(f"fixed {s:g}", "fixed", strength=s))
    for spec in args.extra_adaptive:
        mapping, lo, hi = parse_adaptive(spec)
        arms.append(Arm(f"adaptive {mapping} [{lo:g}, {hi:g}]", "adaptive", mapping=mapping, min_strength=lo,
                        max_strength=hi))
    return arms


def parse_adaptive(spec: str) -> tuple[str, float, float]:
    """``"easy_strong:0.25:0.75"`` → ``("easy_strong", 0.25, 0.75)``."""
    try:
        mapping, lo, hi = spec.split(":")
        if mapping not in ("easy_strong", "hard_strong", "constant"):
            raise ValueError(mapping)
        return mapping, float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MAPPING:MIN:MAX (e.g. easy_strong:0.25:0.75), got {spec!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000, help="MNIST-1D samples (80%% train, 20%% test)")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--eval-every", type=int, default=5, help="test accuracy every n epochs (for the curve)")
    parser.add_argument("--fixed-strength", type=float, default=0.5, help="strength of the fixed arm")
    parser.add_argument("--mapping", default="easy_strong", choices=("easy_strong", "hard_strong", "constant"))
    parser.add_argument("--min-strength", type=float, default=0.0)
    parser.add_argument("--max-strength", type=float, default=1.0)
    parser.add_argument("--extra-fixed", type=float, nargs="*", default=[], help="more fixed-strength arms")
    parser.add_argument("--extra-adaptive", nargs="*", default=[], metavar="MAPPING:MIN:MAX",
                        help="more adaptive arms, e.g. easy_strong:0.25:0.75 hard_strong:0:1")
    parser.add_argument("--cost-repeats", type=int, default=300, help="batched / step timings (interleaved)")
    parser.add_argument("--worker-samples", type=int, default=2000, help="samples per worker-path timing")
    parser.add_argument("--worker-repeats", type=int, default=5)
    parser.add_argument("--no-cost", action="store_true", help="skip the cost measurements")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG path (default docs/img/augment_benchmark.png; with --quick outputs/augment_quick.png)")
    parser.add_argument("--json", type=Path, default=None, help="also write all results as JSON here")
    parser.add_argument("--quick", action="store_true", help="2 000 samples, 3 epochs, 1 seed, few timings (< 60 s)")
    parser.add_argument("--paired-against", nargs="+", default=["none", "fixed"], metavar="ARM",
                        help="reference arms of the paired-by-seed table")
    parser.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                        help="print the tables and draw the plot from JSON files this script wrote; no training")
    args = parser.parse_args(argv)
    for spec in args.extra_adaptive:
        try:
            parse_adaptive(spec)
        except argparse.ArgumentTypeError as exn:
            parser.error(str(exn))
    if args.quick:
        args.samples, args.epochs, args.seeds, args.eval_every = 2000, 3, [0], 1
        args.cost_repeats, args.worker_samples, args.worker_repeats = 20, 200, 1
    if args.plot is None:
        args.plot = ROOT / ("outputs/augment_quick.png" if args.quick else "docs/img/augment_benchmark.png")
    return args


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Tables and plot of saved runs (``--json``), for re-rendering without training. Several
    files (e.g. more seeds run later) are merged: arms by name, results appended, the cost
    from the first file that has one; they must share samples, epochs, lr and batch size."""
    files = [json.loads(path.read_text()) for path in args.report]
    data = files[0]
    saved = dict(data["args"])
    arms: dict[str, Arm] = {}
    results: list[RunResult] = []
    cost = None
    for other, path in zip(files, args.report):
        for key in ("samples", "epochs", "lr", "batch_size", "eval_every"):
            if other["args"][key] != saved[key]:
                raise SystemExit(f"{path}: {key} = {other['args'][key]}, the first file has {saved[key]}")
        for a in other["arms"]:
            arms.setdefault(a["name"], Arm(**a))
        results += [RunResult(**{**r, "curve": [tuple(c) for c in r["curve"]]}) for r in other["results"]]
        cost = cost if cost is not None else other.get("cost")
    saved["seeds"] = sorted({r.seed for r in results})
    arms_list = list(arms.values())
    print(f"# Augmentation benchmark — {data['machine']} (from {', '.join(map(str, args.report))})")
    print(f"{saved['epochs']} epochs, lr {saved['lr']:g}, batch {saved['batch_size']}, seeds "
          f"{' '.join(map(str, saved['seeds']))}\n")
    print("## Test accuracy\n")
    print(accuracy_table(arms_list, results))
    print("\n## Paired by seed\n")
    print(paired_table(arms_list, results, args.paired_against))
    if cost is not None:
        per_sample, fraction = cost_tables(cost)
        print(f"\n## Augmentation cost per sample (strength {saved['fixed_strength']:g})\n")
        print(per_sample)
        print("\n## Device path vs a training step\n")
        print(fraction)
    plot(args.plot, arms_list, results, cost, f"MNIST-1D, {saved['samples'] * 4 // 5} train, {saved['epochs']} epochs, "
         f"seeds {','.join(map(str, saved['seeds']))} — {data['machine']}")
    print(f"\nplot: {args.plot}")
    return {"args": saved, "arms": [asdict(a) for a in arms_list], "results": [asdict(r) for r in results], "cost": cost}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    single_thread()
    args = parse_args(argv)
    if args.report is not None:
        return report(args)
    started = time.perf_counter()
    split = make_split(args.samples)
    arms = build_arms(args)
    print(f"# Augmentation benchmark — {machine()}")
    print(f"MNIST-1D (clean): {len(split.y)} train / {len(split.y_test)} test; {args.epochs} epochs, lr {args.lr:g}, "
          f"batch {args.batch_size}, seeds {' '.join(map(str, args.seeds))}\n", flush=True)
    results: list[RunResult] = []
    for seed in args.seeds:
        for arm in arms:
            r = train_arm(split, arm, seed, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                          eval_every=args.eval_every)
            results.append(r)
            print(f"  seed {seed} {arm.name:>34}: test acc {100 * r.test_acc:.2f}%  ({r.train_seconds:.1f} s)", flush=True)
            if args.json is not None:  # partial results survive an interrupted run
                write_json(args.json, args, arms, results, None)
    print("\n## Test accuracy\n")
    print(accuracy_table(arms, results))
    print("\n## Paired by seed\n")
    print(paired_table(arms, results, args.paired_against))
    cost = None
    if not args.no_cost:
        cost = measure_cost(split, args)
        per_sample, fraction = cost_tables(cost)
        print(f"\n## Augmentation cost per sample (strength {args.fixed_strength:g})\n")
        print(per_sample)
        print("\n## Device path vs a training step\n")
        print(fraction)
    plot(args.plot, arms, results, cost,
         f"MNIST-1D, {len(split.y)} train, {args.epochs} epochs, seeds {','.join(map(str, args.seeds))} — {machine()}")
    print(f"\nplot: {args.plot}")
    print(f"total wall time: {time.perf_counter() - started:.0f} s")
    return write_json(args.json, args, arms, results, cost)


def write_json(path: Path | None, args: argparse.Namespace, arms: Sequence[Arm], results: Sequence[RunResult],
               cost: dict[str, Any] | None) -> dict[str, Any]:
    out = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "machine": machine(),
           "arms": [asdict(a) for a in arms], "results": [asdict(r) for r in results], "cost": cost}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
