"""Aten ops dispatched per call on the hot path (deterministic on any machine).

Counts every aten op a ``TorchDispatchMode`` sees (views included) for one call of
``Ledger.record`` with logits, of ``augment_batch`` with ``Compose`` of the four image
built-ins, and of ``augment_batch`` with the MNIST-1D signal Compose, all on a 256-batch.
Each op is a kernel launch on a GPU.

    python benchmarks/op_counts.py [--out docs/results/op_counts.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from curated_loader.augment import (
    ColorJitter,
    Compose,
    HorizontalFlip,
    RandomErasing,
    RandomResizedCrop,
    augment_batch,
)
from curated_loader.curation import Ledger

BATCH, NUM_SAMPLES, NUM_CLASSES = 256, 10_000, 10


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count(fn: Callable[[], object]) -> OpCounter:
    """Ops of one call of ``fn`` (after one warm-up call that fills per-size caches)."""
    fn()
    with OpCounter() as counter:
        fn()
    return counter


def record_call() -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(NUM_SAMPLES, (BATCH,), generator=g)
    logits = torch.randn(BATCH, NUM_CLASSES, generator=g)
    targets = torch.randint(NUM_CLASSES, (BATCH,), generator=g)
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    ledger = Ledger(NUM_SAMPLES, num_classes=NUM_CLASSES)
    return lambda: ledger.record(ids, loss, logits, targets)


def image_compose() -> Compose:
    return Compose([RandomResizedCrop(), HorizontalFlip(), ColorJitter(), RandomErasing()])


def augment_call(height: int = 28, width: int = 28) -> Callable[[], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 1, height, width, generator=g)
    strength = torch.rand(BATCH, generator=g)
    ids = torch.arange(BATCH)
    aug = image_compose()
    return lambda: augment_batch(aug, x, strength, ids, epoch=1, seed=0)


def signal_augment_call() -> Callable[[], torch.Tensor]:
    from augmentation import (
        signal_augment,  # the MNIST-1D signal Compose of the benchmarks
    )

    g = torch.Generator().manual_seed(0)
    x, strength = torch.randn(BATCH, 40, generator=g), torch.rand(BATCH, generator=g)
    aug = signal_augment("x")
    return lambda: augment_batch(aug, x, strength, torch.arange(BATCH), epoch=1, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    calls = (("ledger_record", record_call), ("augment_batch", augment_call), ("augment_batch_signal", signal_augment_call))
    result = {name: count(make()).total for name, make in calls}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
