"""Wall time of a full curation plan over a sharded ledger, beside the dense plan, 2 gloo CPU ranks.

    nice -n 10 python benchmarks/sharded_plan.py --size 1e6

Both ranks record one epoch (``scale.batches``: each id once, half of each rank's ids owned by
the other rank) into a ``ShardedLedger`` and a dense ``Ledger``, sync both, then time
:func:`time_plan` with :func:`full_plan` (the default noise filter, the GMM filter, small-loss,
InfoBatch, class-balanced reweighting, augmentation strength) over each. Prints per rank the
plan's wall time (statistics read + decide + gather) and the bytes gathered per sample, and
whether the sharded decision equals the dense one (keep and strength codes exactly, weights to
float16 rounding).

Other benchmarks call :func:`time_plan` on every rank of a running process group::

    from sharded_plan import full_plan, time_plan        # benchmarks/ on sys.path
    row.update(time_plan(ledger, full_plan(), epoch=1))  # a collective: every rank calls it
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the repository importable (an import keeps sys.path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import (
    AugmentStrength,
    CurationPlan,
    Decision,
    GMMFilter,
    InfoBatchPrune,
    Ledger,
    LossMarginFilter,
    Reweight,
    ShardedLedger,
    SmallLossFilter,
)
from curated_loader.data.snapshot import PACKED_BYTES_PER_SAMPLE
from results import write_json

WORLD, NUM_CLASSES = 2, 10


def full_plan(seed: int = 0) -> CurationPlan:
    """Every policy kind that needs a global quantity, all active from epoch 0."""
    return CurationPlan(
        noise_filter=[LossMarginFilter(warmup_epochs=0), GMMFilter(warmup_epochs=0), SmallLossFilter(warmup_epochs=0)],
        prune=InfoBatchPrune(warmup_epochs=0),
        reweight=Reweight(class_balance=True, warmup_epochs=0),
        augment=AugmentStrength(warmup_epochs=0),
        seed=seed,
        num_epochs=10,  # InfoBatch's annealing needs the run length
    )


def time_plan(ledger: Ledger | ShardedLedger, plan: CurationPlan, epoch: int) -> dict[str, Any]:
    """Time ``plan.decide`` over an already synced ledger on every rank (a collective): the
    statistics read and the decision (with its gather when sharded). Returns ``plan_s`` (wall
    seconds, after a barrier), ``stats_s``, ``gathered_bytes_per_sample`` (all_gather bytes per
    sample of N received by each rank; 0 for a dense ledger) and the ``decision``."""
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        dist.barrier()
    t0 = time.perf_counter()
    stats = ledger.stats(sync=False)
    t1 = time.perf_counter()
    decision = plan.decide(stats, epoch)
    t2 = time.perf_counter()
    gathered = 0.0
    if isinstance(ledger, ShardedLedger) and ledger.world > 1:
        padded = 16 * math.ceil(math.ceil(ledger.num_samples / ledger.world) / 16)  # a slice, padded as gathered
        gathered = PACKED_BYTES_PER_SAMPLE * padded * ledger.world / ledger.num_samples
    return {"plan_s": t2 - t0, "stats_s": t1 - t0, "gathered_bytes_per_sample": gathered, "decision": decision}


def recorded(ledger: Ledger | ShardedLedger, rank: int, batch: int = 1 << 16) -> Ledger | ShardedLedger:
    """``ledger`` with one epoch of ``scale.batches`` recorded by ``rank`` (calls of ``batch``
    entries) and synced (a collective for a sharded ledger)."""
    from scale import batches

    ledger.set_epoch(0)
    for call in batches(ledger.num_samples, rank, 0, batch):
        ledger.record(*call)
    ledger.sync()
    return ledger


def _worker(rank: int, port: int, n: int, batch: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        rows = {}
        for name, ledger in (("sharded", ShardedLedger(n, NUM_CLASSES)), ("dense", Ledger(n, NUM_CLASSES))):
            rows[name] = time_plan(recorded(ledger, rank, batch), full_plan(), epoch=1)
            del ledger
        torch.save(rows, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _agreement(sharded: Decision, dense: Decision) -> dict[str, Any]:
    weight_rel = (sharded.weight - dense.weight).abs() / dense.weight.abs().clamp_min(1e-30)
    return {
        "keep_equal": bool(torch.equal(sharded.keep, dense.keep)),
        "strength_codes_equal": bool(torch.equal(torch.round(sharded.strength * 255), torch.round(dense.strength * 255))),
        "weight_max_rel_diff": float(weight_rel[dense.weight > 0].max()) if bool((dense.weight > 0).any()) else 0.0,
        "summary_equal": sharded.summary() == dense.summary(),
        "kept": int(dense.keep.sum()),
        "flagged": dense.summary()["flagged"],
        "pruned": dense.summary()["pruned"],
    }


def main(argv: list[str] | None = None) -> dict:
    from scale import _free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e6)
    parser.add_argument("--batch", type=int, default=1 << 16, help="entries per record call")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    n = int(args.size)
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(_free_port(), n, args.batch, out), nprocs=WORLD, join=True)
        ranks = [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    print(f"N = {n:.0e}, {WORLD} gloo ranks")
    print("| rank | ledger | plan s | of which stats s | gathered B/sample |")
    print("|---|---|---|---|---|")
    result: dict[str, Any] = {"n": n, "world": WORLD, "ranks": []}
    for rank, rows in enumerate(ranks):
        for name in ("dense", "sharded"):
            r = rows[name]
            print(f"| {rank} | {name} | {r['plan_s']:.2f} | {r['stats_s']:.2f} | {r['gathered_bytes_per_sample']:.3f} |")
        agreement = _agreement(rows["sharded"]["decision"], rows["dense"]["decision"])
        print(f"rank {rank}: sharded vs dense decision: {agreement}")
        result["ranks"].append({"rank": rank, "agreement": agreement,
                                **{f"{k}_{name}": rows[name][k] for name in ("dense", "sharded")
                                   for k in ("plan_s", "stats_s", "gathered_bytes_per_sample")}})
    write_json(args.json, result, indent=2)
    return result


if __name__ == "__main__":
    main()
