"""Shared pieces of the curation benchmarks (``noisy_labels.py``, ``pruning.py``).

Training runs from in-memory tensors (the loader's own cost is measured by
``loader_throughput.py``), but every curation decision goes through the project's engine
exactly as the callback wires it:

* each epoch streams the samples ``decision.keep`` selects, in an order shuffled by a seeded
  generator, and each step's loss is ``weighted_loss(ℓ, w, plan.reduction)`` with
  ``w = decision.weight`` (as ``curated_loss`` computes it: ``Σ w·ℓ / Σ w`` by default);
* each step calls ``ledger.record(ids, per_sample_loss, logits, targets)``;
* at each epoch end ``decision = plan.decide(ledger, epoch + 1)`` makes the next epoch.

Compute is counted as sample passes (forward + backward of one sample; the kept samples of
every epoch summed), as wall time of the training loop (evaluation excluded) and as the
process CPU time of that loop (one torch thread: less disturbed than the wall clock when other
work shares the machine).
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from curated_loader.curation import DEFAULT_REDUCTION, CurationPlan, Decision, Ledger, weighted_loss
from curated_loader.models import Signal1DCNN

NUM_CLASSES = 10

#: The recipe of the MNIST-1D paper's CNN as used throughout the benchmarks.
RECIPE = {"lr": 1e-2, "batch_size": 256, "epochs": 60}


def single_thread() -> None:
    """One intra-op thread: several times faster for this tiny CNN on a shared 2-core box."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


@functools.lru_cache(maxsize=4)
def mnist1d(num_samples: int = 20000, data_seed: int = 42) -> dict[str, np.ndarray]:
    """MNIST-1D generated locally (80% train / 20% clean test), cached per process."""
    from curated_loader.datasets import make_mnist1d

    return make_mnist1d(num_samples, seed=data_seed)


@dataclass
class Split:
    """In-memory training data: signals, the labels trained on, and a clean test set."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    noise_mask: torch.Tensor | None = None  # for evaluation only; training never reads it

    @property
    def num_samples(self) -> int:
        return int(self.y.shape[0])


def weak_model_probs(x: torch.Tensor, y: torch.Tensor, *, epochs: int = 1, subset: int = 2000, seed: int = 0) -> np.ndarray:
    """Softmax outputs of a deliberately weak model — ``Signal1DCNN`` trained ``epochs`` epoch(s)
    on the first ``subset`` clean training samples — for instance-dependent label noise."""
    run = train(x[:subset], y[:subset], epochs=epochs, seed=seed + 104729, batch_size=64)
    return torch.softmax(predict(run.model, x), -1).numpy()


def make_split(num_samples: int, noise_rate: float = 0.0, noise_kind: str = "symmetric", seed: int = 0) -> Split:
    """MNIST-1D with ``noise_rate`` of the training labels corrupted (draw seeded by ``seed``).

    ``noise_kind="instance"`` flips labels toward the confusions of :func:`weak_model_probs`."""
    from curated_loader.data.noise import inject_label_noise

    data = mnist1d(num_samples)
    y = data["y"]
    mask = np.zeros(len(y), dtype=bool)
    if noise_rate > 0:
        probs = None
        if noise_kind == "instance":
            probs = weak_model_probs(torch.from_numpy(data["x"]), torch.from_numpy(y), seed=seed)
        y, mask = inject_label_noise(y, noise_rate, num_classes=NUM_CLASSES, kind=noise_kind, seed=seed, probs=probs)
    return Split(
        torch.from_numpy(data["x"]), torch.from_numpy(np.asarray(y, dtype=np.int64)),
        torch.from_numpy(data["x_test"]), torch.from_numpy(data["y_test"]), torch.from_numpy(mask),
    )


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Logits for ``x`` in eval mode."""
    model.eval()
    out = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    model.train()
    return out


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x).argmax(-1) == y).float().mean())


@dataclass
class RunResult:
    """What one training run produced."""

    test_acc: float
    sample_passes: int
    train_seconds: float
    epochs: int
    cpu_seconds: float = 0.0
    decision: Decision | None = None
    ledger: Ledger | None = None
    model: torch.nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    plan: CurationPlan | None = None,
    lr: float = RECIPE["lr"],
    batch_size: int = RECIPE["batch_size"],
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    track: bool | None = None,
    record_logits: bool = True,
    eval_every: int = 0,
    on_epoch_end: Callable[[int, Ledger | None, Decision | None], None] | None = None,
    reduction: str | None = None,
    final_lr_decay: tuple[int, float] | None = None,
) -> RunResult:
    """Train ``Signal1DCNN`` with Adam on ``(x, y)``; curate through ``plan`` when given.

    Without a plan (and ``track`` not set) this is plain training: no ledger, every sample
    every epoch, the plain mean loss. ``seed`` sets the initialization and the shuffling.
    ``record_logits=False`` records only the per-sample loss (enough for loss-based policies
    such as InfoBatch; margin and confidence statistics then stay empty).
    ``eval_every > 0`` adds the test accuracy every that many epochs to ``history`` (outside
    the timed region). ``reduction`` overrides the plan's loss reduction.
    ``final_lr_decay=(k, f)`` multiplies the learning rate by ``f`` for the last ``k`` epochs
    (the same explicit schedule for every method of a comparison).
    """
    track = plan is not None if track is None else track
    torch.manual_seed(seed)
    model = Signal1DCNN(length=x.shape[-1], num_classes=NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed + 7919)
    n = len(y)
    ledger = Ledger(n, num_classes=NUM_CLASSES) if track else None
    decision = Decision.keep_all(n) if plan is not None else None
    passes, seconds, cpu_seconds = 0, 0.0, 0.0
    history: list[dict[str, Any]] = []
    if reduction is None:
        reduction = getattr(plan, "reduction", DEFAULT_REDUCTION)
    for epoch in range(epochs):
        if final_lr_decay is not None and epoch == epochs - final_lr_decay[0]:
            for group in optimizer.param_groups:
                group["lr"] = lr * final_lr_decay[1]
        start, start_cpu = time.perf_counter(), time.process_time()
        if decision is None:
            order = torch.randperm(n, generator=shuffle)
            weights = None
        else:
            kept = decision.keep.nonzero().squeeze(1)
            order = kept[torch.randperm(len(kept), generator=shuffle)]
            weights = decision.weight
        if ledger is not None:
            ledger.set_epoch(epoch)
        for begin in range(0, len(order), batch_size):
            ids = order[begin : begin + batch_size]
            xb, yb = x[ids], y[ids]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, reduction="none")
            if ledger is not None:
                if record_logits:
                    ledger.record(ids, loss.detach(), logits.detach(), yb)
                else:
                    ledger.record(ids, loss.detach())
            total = loss.mean() if weights is None else weighted_loss(loss, weights[ids], reduction)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
        passes += len(order)
        if plan is not None:
            decision = plan.decide(ledger, epoch + 1)
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - start_cpu
        if on_epoch_end is not None:
            on_epoch_end(epoch, ledger, decision)
        if eval_every and x_test is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            history.append({"epoch": epoch + 1, "test_acc": accuracy(model, x_test, y_test), "passes": passes})
    test_acc = accuracy(model, x_test, y_test) if x_test is not None else float("nan")
    return RunResult(test_acc, passes, seconds, epochs, cpu_seconds, decision, ledger, model, history)


# -- small helpers for the reports --------------------------------------------------------
def median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def pct(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.{digits}f}%"


def num(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_parallel(fn: Callable[..., Any], jobs: Sequence[tuple], processes: int) -> list[Any]:
    """``[fn(*job) for job in jobs]``, in ``processes`` worker processes (spawned, one torch
    thread each) when ``processes > 1``."""
    if processes <= 1 or len(jobs) <= 1:
        single_thread()
        return [fn(*job) for job in jobs]
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(processes, initializer=single_thread, maxtasksperchild=None) as pool:
        return pool.starmap(fn, jobs, chunksize=1)


def machine() -> str:
    """A one-line description of where the numbers came from."""
    import platform

    return f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
