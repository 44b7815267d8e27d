"""Curation from a plain PyTorch loop: no Lightning.

    python examples/plain_pytorch.py                   # makes small noisy MNIST-1D shards first

The pieces the Lightning callback wires together, used by hand:

* ``CuratedStream`` + ``CuratedLoader`` — batches ``(x, y, ids, weights)`` of the kept samples;
* ``Ledger`` — per-sample loss / margin history, recorded every step (no host sync);
* ``CurationPlan`` — at each epoch end, ``plan.decide(ledger, epoch + 1)`` and
  ``decision.publish_to(stream.snapshot)``; the loader reads it when the next epoch starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from curated_loader import CuratedLoader, CuratedStream
from curated_loader.curation import REDUCTIONS, CurationPlan, GMMFilter, InfoBatchPrune, Ledger, weighted_loss
from curated_loader.models import Signal1DCNN


def evaluate(model: torch.nn.Module, loader: CuratedLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y, _ids, _weights in loader:
            correct += int((model(x.float()).argmax(-1) == y).sum())
            total += len(y)
    model.train()
    return correct / max(total, 1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/mnist1d_plain", help="shard folder (made when missing)")
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this small model)")
    parser.add_argument("--reduction", default=None, choices=REDUCTIONS,
                        help="loss reduction: normalized = Σw·ℓ/Σw (the default), mean = mean(w·ℓ)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = Path(args.data)
    if not (data / "train-index.json").exists():
        from curated_loader.datasets import write_noisy_mnist1d

        write_noisy_mnist1d(data, num_samples=args.samples, noise_rate=0.4, progress=False)

    stream = CuratedStream(str(data / "train-index.json"), fields=("npy", "cls"), batch_size=128, seed=0)
    loader = CuratedLoader(stream, num_workers=args.workers, persistent_workers=True)
    test_stream = CuratedStream(str(data / "test-index.json"), fields=("npy", "cls"), batch_size=512, shuffle=False)
    test_loader = CuratedLoader(test_stream)

    model = Signal1DCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ledger = Ledger(stream.num_samples, num_classes=10)
    plan = CurationPlan(
        noise_filter=GMMFilter(warmup_epochs=5),
        prune=InfoBatchPrune(ratio=0.3, warmup_epochs=6),
        seed=0,
        num_epochs=args.epochs,
        **({"reduction": args.reduction} if args.reduction else {}),
    )

    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        ledger.set_epoch(epoch)
        for x, y, ids, weights in loader:
            logits = model(x.float())
            loss = F.cross_entropy(logits, y, reduction="none")
            ledger.record(ids, loss.detach(), logits.detach(), y)  # per step, stays on the device
            weighted_loss(loss, weights, plan.reduction).backward()  # the curation weights
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        decision = plan.decide(ledger, epoch + 1)  # syncs the ledger, then the policies
        decision.publish_to(stream.snapshot)  # the next epoch's loader reads it
        summary = decision.summary()
        print(f"epoch {epoch:2d}: test accuracy {evaluate(model, test_loader):.3f}; next epoch keeps "
              f"{summary['kept']} samples ({summary['flagged']} flagged, {summary['pruned']} pruned)")

    accuracy = evaluate(model, test_loader)
    passes = int(ledger.table("count").sum())
    print(f"final test accuracy {accuracy:.3f}; {passes} sample passes "
          f"({passes / (args.epochs * stream.num_samples):.1%} of full epochs)")
    return {"test_acc": accuracy, "sample_passes": float(passes)}


if __name__ == "__main__":
    main()
