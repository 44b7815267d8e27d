"""Per-step cost of curation tracking and of device-path augmentation, from one training run.

    python benchmarks/tracking_overhead.py [--json docs/results/tracking_overhead.json]
    python benchmarks/tracking_overhead.py --quick    # tiny, for the test suite
    python benchmarks/tracking_overhead.py --device cuda
    python benchmarks/tracking_overhead.py --augment-compile   # + the compiled Compose, same batches

One Trainer fits ``--epochs`` curated epochs of noisy MNIST-1D: a ``CurationCallback`` (GMM
noise filter, InfoBatch pruning, adaptive augmentation strength) re-curates at every epoch end
and ``CuratedDataModule(augment_on="device")`` augments each batch with the MNIST-1D signal
Compose at the snapshot's strengths. The LightningModule holds two copies of the MNIST-1D CNN,
each with its own Adam (manual optimization), and trains both on every batch:

* plain: forward, ``F.cross_entropy`` (mean), backward, Adam step;
* tracked: forward, ``curated_loss`` (``Ledger.record`` with logits, weighted mean), backward,
  Adam step. Its records are the ledger's, so they drive the curation.

The arms alternate which goes first from batch to batch, so load on a shared machine hits
both alike; the device-path augmentation (``_augment_on_device``: strength lookup +
``augment_batch``) is timed on the same batches. Ratios are of medians over every step after
the first epoch (warm-up), wall clock and thread CPU time, all from this one run; beside them
the median of per-step ratios (each step's parts timed back to back, so load that changes
from step to step cancels) and the ratio of minima (the least-disturbed step of each). The
epoch-end re-curation (ledger sync, plan, publish) is timed separately.

``--augment-compile`` also runs every batch through a second, equal Compose built with
``compile=True`` (``torch.compile``), on the same batch and strengths, the two alternating which
goes first; training uses the eager output. Its first call (in the warm-up epoch) compiles:
that time (a cold compile: inductor's cache goes to an empty temporary directory) is reported
on its own, never in the per-step medians, together with the graphs dynamo made (1: no
recompile for any later batch size, strength, epoch or seed), its graph breaks, the batch
sizes it saw and the largest difference from the eager output over every batch. With
``--device cuda`` each timed part runs under ``torch.cuda.set_sync_debug_mode("error")`` (a
host sync inside it fails the run) and is bracketed by ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from augmentation import signal_augment
from results import write_json

from curated_loader import CuratedDataModule, CurationCallback, curated_loss
from curated_loader.curation import (
    AugmentStrength,
    CurationPlan,
    GMMFilter,
    InfoBatchPrune,
)
from curated_loader.datasets import write_noisy_mnist1d
from curated_loader.models import Signal1DCNN


class Clock:
    """Wall and thread-CPU seconds of timed calls, by name; syncs CUDA around each call and
    forbids host syncs inside it when ``strict``."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.times: dict[str, list[tuple[float, float]]] = {}
        self.recording = False

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            out = fn()
        finally:
            if self.cuda:
                torch.cuda.set_sync_debug_mode(0)
        if self.cuda:
            torch.cuda.synchronize()
        if self.recording:
            self.times.setdefault(name, []).append((time.perf_counter() - wall, time.thread_time() - cpu))
        return out

    def median(self, name: str, which: int) -> float:
        return statistics.median(t[which] for t in self.times[name])

    def minimum(self, name: str, which: int) -> float:
        return min(t[which] for t in self.times[name])

    def paired_ratio(self, name: str, base: str, which: int) -> float:
        """Median over steps of ``name``'s time over ``base``'s in the same step (timed
        back to back, so load that changes from step to step cancels)."""
        return statistics.median(a[which] / b[which] for a, b in zip(self.times[name], self.times[base]))


class TwoArms(L.LightningModule):
    """The plain and the tracked copy of one CNN, trained on the same batches."""

    def __init__(self, width: int, clock: Clock) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.plain = Signal1DCNN(channels=width)
        self.tracked = Signal1DCNN(channels=width)
        self.tracked.load_state_dict(self.plain.state_dict())
        self.clock = clock

    def _step(self, net: torch.nn.Module, optimizer: Any, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        loss = loss_fn(net(self._x))
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def _plain(self) -> None:
        self._step(self.plain, self.optimizers()[0], lambda logits: F.cross_entropy(logits, self._y))

    def _tracked(self) -> None:
        def loss(logits: torch.Tensor) -> torch.Tensor:
            return curated_loss(self, F.cross_entropy(logits, self._y, reduction="none"), logits.detach(), self._y)

        self._step(self.tracked, self.optimizers()[1], loss)

    def training_step(self, batch, batch_idx):
        self._x, self._y = batch
        arms = [("plain", self._plain), ("tracked", self._tracked)]
        for name, fn in arms if batch_idx % 2 == 0 else arms[::-1]:
            self.clock(name, fn)

    def configure_optimizers(self):
        return [torch.optim.Adam(self.plain.parameters(), lr=1e-3), torch.optim.Adam(self.tracked.parameters(), lr=1e-3)]


class TimedDevicePath(CuratedDataModule):
    """The data module, timing its device-path augmentation; with ``compiled`` (an equal
    Compose built with ``compile=True``) also that one on the same batches."""

    def __init__(self, *args: Any, clock: Clock, compiled: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.compiled = compiled
        self.compile_s: tuple[float, float] | None = None  # wall, thread CPU of the first compiled call
        self.max_abs_diff = 0.0
        self.batch_sizes: set[int] = set()
        self._batches = 0

    def _augment_on_device(self, x: torch.Tensor, ids: torch.Tensor, epoch: int, repeats: torch.Tensor | None) -> torch.Tensor:
        def run(aug: Any) -> Callable[[], torch.Tensor]:
            def call() -> torch.Tensor:
                eager, self.augment = self.augment, aug
                try:
                    return super(TimedDevicePath, self)._augment_on_device(x, ids, epoch, repeats)
                finally:
                    self.augment = eager
            return call

        if self.compiled is None:
            return self.clock("augment", run(self.augment))
        if self.compile_s is None:
            wall, cpu = time.perf_counter(), time.thread_time()
            run(self.compiled)()
            self.compile_s = (time.perf_counter() - wall, time.thread_time() - cpu)
        arms = [("augment", run(self.augment)), ("augment_compiled", run(self.compiled))]
        self._batches += 1
        self.batch_sizes.add(x.shape[0])
        out = {name: self.clock(name, fn) for name, fn in (arms if self._batches % 2 else arms[::-1])}
        self.max_abs_diff = max(self.max_abs_diff, float((out["augment"] - out["augment_compiled"]).abs().max()))
        return out["augment"]


class Curation(CurationCallback):
    """The curation callback, timing its epoch-end work, recording what each epoch kept and
    switching the clock on after the first (warm-up) epoch."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.epoch_end: list[float] = []
        self.epochs: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        start = time.perf_counter()
        super().on_train_epoch_end(trainer, pl_module)
        self.epoch_end.append(time.perf_counter() - start)
        d = self.decision
        self.epochs.append({
            "epoch": trainer.current_epoch,
            "steps": trainer.fit_loop.epoch_loop.batch_progress.current.completed,
            "kept_next": int(d.keep.sum()),
            "mean_strength_next": round(float(d.strength[d.keep].mean()), 3),
        })
        self.clock.recording = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=16000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=25, help="conv channels of the 1-D CNN")
    parser.add_argument("--epochs", type=int, default=6, help="curated epochs (the first is warm-up)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--augment-compile", action="store_true",
                        help="also time the compiled Compose (compile=True) on the same batches")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs = 1000, 3
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    clock = Clock(args.device == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_noisy_mnist1d(tmp, num_samples=args.samples, noise_rate=0.4, progress=False)
        compiled = signal_augment("npy") if args.augment_compile else None
        if compiled is not None:
            compiled.compile = True
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")  # empty: the compile is a cold one
        dm = TimedDevicePath(paths.train_index, fields=("npy", "cls"), decode=(), batch_size=args.batch,
                             augment=signal_augment("npy"), augment_on="device", clock=clock, compiled=compiled)
        plan = CurationPlan(noise_filter=GMMFilter(warmup_epochs=2), prune=InfoBatchPrune(ratio=0.3),
                            augment=AugmentStrength(warmup_epochs=0))
        curation = Curation(plan, num_classes=10, clock=clock)
        trainer = L.Trainer(max_epochs=args.epochs, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[curation])
        trainer.fit(TwoArms(args.width, clock), dm)
    result = report(args, clock, curation, dm)
    result["load_average_before_after"] = [round(v, 2) for v in (*load_before, *os.getloadavg())]
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()}")
    write_json(args.json, result)


def report(args: argparse.Namespace, clock: Clock, curation: Curation, dm: TimedDevicePath) -> dict[str, Any]:
    """Print the tables and return the figures."""
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({platform.machine()}, 1 torch thread)"
    parts = ("plain", "tracked", "augment") + (("augment_compiled",) if dm.compiled is not None else ())
    med = {part: (clock.median(part, 0), clock.median(part, 1)) for part in parts}
    steps = len(clock.times["plain"])
    print(f"device: {name}; {args.samples} noisy MNIST-1D samples, batch {args.batch}, CNN width {args.width}")
    print(f"{args.epochs} curated epochs in one Trainer; timed: the {steps} steps after epoch 0\n")
    print("| epoch | steps | kept for next epoch | mean strength next |")
    print("|---:|---:|---:|---:|")
    for e in curation.epochs:
        print(f"| {e['epoch']} | {e['steps']} | {e['kept_next']} | {e['mean_strength_next']} |")
    print("\n| part (per batch) | median wall ms | median CPU ms |")
    print("|---|---:|---:|")
    labels = {"plain": "plain step", "tracked": "tracked step (curated_loss)", "augment": "device-path augmentation",
              "augment_compiled": "device-path augmentation, compiled Compose"}
    for part, (wall, cpu) in med.items():
        print(f"| {labels[part]} | {wall * 1e3:.3f} | {cpu * 1e3:.3f} |")
    pairs = {"tracked_over_plain": ("tracked", "plain"), "augment_over_plain_step": ("augment", "plain")}
    if "augment_compiled" in med:
        pairs["augment_compiled_over_plain_step"] = ("augment_compiled", "plain")
        pairs["augment_compiled_over_eager"] = ("augment_compiled", "augment")
    ratios = {key: [med[part][i] / med[base][i] for i in (0, 1)] for key, (part, base) in pairs.items()}
    paired = {key: [clock.paired_ratio(part, base, i) for i in (0, 1)] for key, (part, base) in pairs.items()}
    of_min = {key: [clock.minimum(part, i) / clock.minimum(base, i) for i in (0, 1)] for key, (part, base) in pairs.items()}
    t, a = ratios["tracked_over_plain"], ratios["augment_over_plain_step"]
    print(f"\ntracked / plain step: {t[0]:.3f} wall, {t[1]:.3f} CPU")
    print(f"device augmentation / plain step: {a[0]:.1%} wall, {a[1]:.1%} CPU")
    print("\n| ratio | of medians (wall, CPU) | median of per-step ratios (wall, CPU) | of minima (wall, CPU) |")
    print("|---|---:|---:|---:|")
    ratio_labels = {"tracked_over_plain": "tracked / plain step", "augment_over_plain_step": "device augmentation / plain step",
                    "augment_compiled_over_plain_step": "compiled device augmentation / plain step",
                    "augment_compiled_over_eager": "compiled / eager device augmentation"}
    for key in pairs:
        label = ratio_labels[key]
        print(f"| {label} | " + " | ".join(f"{r[key][0]:.3f}, {r[key][1]:.3f}" for r in (ratios, paired, of_min)) + " |")
    end = statistics.median(curation.epoch_end)
    print(f"epoch-end re-curation (sync + plan + publish), median: {end * 1e3:.1f} ms")
    compiled = compile_report(dm) if dm.compiled is not None else None
    if compiled is not None:
        c = ratios["augment_compiled_over_plain_step"]
        print(f"compiled device augmentation / plain step: {c[0]:.1%} wall, {c[1]:.1%} CPU")
        print(f"compiled Compose: {compiled}")
    return {
        "command": " ".join(["python", "benchmarks/tracking_overhead.py", *sys.argv[1:]]),
        "device": name,
        "samples": args.samples,
        "batch": args.batch,
        "epochs": curation.epochs,
        "timed_steps": steps,
        "median_ms": {part: {"wall": w * 1e3, "cpu": c * 1e3} for part, (w, c) in med.items()},
        "ratios_wall_cpu": ratios,
        "paired_ratios_wall_cpu": paired,
        "ratios_of_minima_wall_cpu": of_min,
        "epoch_end_ms": end * 1e3,
        **({"augment_compile": compiled} if compiled is not None else {}),
    }


def compile_report(dm: TimedDevicePath) -> dict[str, Any]:
    """The compiled Compose's first call (its compile), what dynamo made of it, and how far
    its outputs were from the eager ones."""
    from torch._dynamo.utils import counters

    return {
        "first_call_s_wall_cpu": [round(v, 3) for v in dm.compile_s],
        "still_compiled": dm.compiled.compile,  # False: it failed and fell back to eager
        "dynamo_graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "batch_sizes_seen": sorted(dm.batch_sizes),
        "inductor_fx_cache_hits_misses": [counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]],
        "max_abs_diff_from_eager": dm.max_abs_diff,
    }


if __name__ == "__main__":
    main()
