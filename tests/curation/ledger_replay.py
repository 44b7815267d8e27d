"""A fixed stream of ledger records and the plan that judges them, shared by the ledger tests.

``python tests/curation/ledger_replay.py`` rewrites ``fixtures/ledger_replay.pt``: the
``LedgerStats`` and the ``Decision`` the ledger produced for this stream when the fixture was
made, so a change of the ledger's storage can be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import torch

from curated_loader.curation import (
    AugmentStrength,
    AUMFilter,
    CartographyFilter,
    CurationPlan,
    GMMFilter,
    InfoBatchPrune,
    Ledger,
    Reweight,
    SmallLossFilter,
)

N, CLASSES, EPOCHS, BATCH = 240, 4, 3, 16
FIXTURE = Path(__file__).parent / "fixtures" / "ledger_replay.pt"
Record = tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def stream() -> Iterator[Record]:
    """(epoch, rank, ids, loss, logits, targets) in the order one process would see them.
    Each epoch splits a fresh permutation in two halves, one per rank (ids move between
    ranks across epochs); batches repeat some ids to exercise duplicates."""
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(CLASSES, (N,), generator=g)
    for epoch in range(EPOCHS):
        halves = torch.randperm(N, generator=g).chunk(2)
        for start in range(0, N // 2, BATCH):
            for rank, half in enumerate(halves):
                ids = half[start : start + BATCH]
                ids = torch.cat([ids, ids[:3]])  # duplicates inside one call
                logits = torch.randn(len(ids), CLASSES, generator=g) * 3
                loss = torch.nn.functional.cross_entropy(logits, labels[ids], reduction="none")
                yield epoch, rank, ids, loss, logits, labels[ids]


def plan() -> CurationPlan:
    return CurationPlan(
        noise_filter=[SmallLossFilter(quantile=0.1), GMMFilter(), AUMFilter(), CartographyFilter()],
        prune=InfoBatchPrune(ratio=0.5, loss_key="ema_loss"),  # the score the fixture was made with
        reweight=Reweight(),
        augment=AugmentStrength(),
        seed=11,
        num_epochs=10,
    )


def replay(rank: int | None = None) -> tuple[Ledger, dict]:
    """Record the stream (all of it, or one rank's share) and decide; returns the ledger and
    the decision's state dict."""
    ledger = Ledger(N, num_classes=CLASSES)
    current = 0
    for epoch, owner, ids, loss, logits, targets in stream():
        if epoch != current:
            ledger.sync()
            current = epoch
        ledger.set_epoch(epoch)
        if rank is None or owner == rank:
            ledger.record(ids, loss, logits, targets)
    ledger.sync()
    ledger.sync()  # idempotent
    return ledger, plan().decide(ledger, EPOCHS).state_dict()


def stats_dict(ledger: Ledger) -> dict[str, object]:
    """Every field of ``ledger.stats()`` by name."""
    stats = ledger.stats()
    return {f.name: getattr(stats, f.name) for f in fields(stats)}


#: Decision fields added after the fixture was recorded (not derived from the ledger's tables)
NEWER_FIELDS = {"info", "offset", "reason_counts", "kept_moments"}  # the filters' diagnostics; a sharded decision's slice and sums


def assert_same_decision(got: dict, expected: dict) -> None:
    """Decision state dicts agree: keep, reason and settings exactly; weight, strength and
    score (derived from float statistics) to float rounding."""
    assert got.keys() - NEWER_FIELDS == expected.keys() - NEWER_FIELDS
    for name, value in expected.items():
        other = got[name]
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.allclose(other, value, rtol=1e-5, atol=1e-6), name
        elif isinstance(value, torch.Tensor):
            assert torch.equal(other, value), name
        else:
            assert other == value, name


if __name__ == "__main__":
    ledger, decision = replay()
    torch.save({"stats": stats_dict(ledger), "decision": decision}, FIXTURE)
    print(f"wrote {FIXTURE}")
