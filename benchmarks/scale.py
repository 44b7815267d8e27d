"""Scale of the sharded ledger: per-rank memory and the epoch-end exchange, 2 gloo CPU ranks.

    nice -n 10 python benchmarks/scale.py --sizes 1e7 --json docs/results/scale.json
    python benchmarks/scale.py --quick

For each N, two processes build a ``ShardedLedger(N, 10 classes)`` and record one epoch in
bulk ``record`` calls: rank r gets the ids ``i ≡ r + epoch (mod 2)`` in shuffled batches (one
record per id per epoch, as the loader splits an epoch; half of each rank's ids belong to the
other rank). Then ``sync`` runs the exchange (two ``all_to_all_single``) and the owners fold.
Prints per rank: table bytes per sample (of N), buffered bytes per sample, the process's peak
RSS before the ledger was made and at the end, record and exchange (``sync``) wall time. Then the equality check: at ``--check-size`` the two ranks record two
epochs, and the union of their slices is compared column by column with a dense single-process
``Ledger`` fed the same records.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import Ledger, ShardedLedger

WORLD, NUM_CLASSES = 2, 10


def batches(n: int, rank: int, epoch: int, batch: int):
    """Rank ``rank``'s records of one epoch: ids ``≡ rank + epoch (mod WORLD)``, each once,
    shuffled within each batch; random logits, targets ``id % classes``, cross-entropy loss."""
    g = torch.Generator().manual_seed(7919 * epoch + rank)
    first = (rank + epoch) % WORLD
    for start in range(first, n, WORLD * batch):
        ids = torch.arange(start, min(n, start + WORLD * batch), WORLD)
        ids = ids[torch.randperm(ids.numel(), generator=g)]
        logits = torch.randn(ids.numel(), NUM_CLASSES, generator=g)
        targets = ids % NUM_CLASSES
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        yield ids, loss, logits, targets


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker(rank: int, port: int, n: int, epochs: int, batch: int, out: str, keep_tables: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        rss_before = _peak_rss_bytes()  # the process before the ledger (python, torch, gloo)
        ledger = ShardedLedger(n, NUM_CLASSES)
        ledger.reserve((n + WORLD - 1) // WORLD)  # this rank's records of one epoch
        record_s = exchange_s = 0.0
        for epoch in range(epochs):
            ledger.set_epoch(epoch)
            for call in batches(n, rank, epoch, batch):
                t0 = time.perf_counter()
                ledger.record(*call)
                record_s += time.perf_counter() - t0
            buffered = ledger.buffered
            dist.barrier()
            t0 = time.perf_counter()
            ledger.sync()
            exchange_s += time.perf_counter() - t0
        result = {
            "rank": rank,
            "owned": [ledger.lo, ledger.hi],
            "table_bytes_per_sample": ledger.table_bytes / n,
            "buffered_records": buffered,
            "buffered_bytes_per_sample": buffered * ledger.entry_bytes / n,
            "buffer_capacity_bytes_per_sample": ledger.buffer_bytes / n,
            "entry_bytes": ledger.entry_bytes,
            "rss_before_ledger_bytes": rss_before,
            "peak_rss_bytes": _peak_rss_bytes(),
            "record_s": record_s,
            "exchange_s": exchange_s,
        }
        if keep_tables:
            result["tables"] = {name: ledger.table(name).clone() for name in ledger.table_names}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(n: int, epochs: int, batch: int, keep_tables: bool = False) -> list[dict]:
    """Run the two ranks; their result dicts in rank order."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(_free_port(), n, epochs, batch, out, keep_tables), nprocs=WORLD, join=True)
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def equality_check(n: int, batch: int, epochs: int = 2) -> dict:
    """Largest difference per column between the union of the owners' slices and a dense
    single-process ledger fed the same records (every rank's, epoch by epoch)."""
    ranks = run(n, epochs, batch, keep_tables=True)
    dense = Ledger(n, NUM_CLASSES)
    for epoch in range(epochs):
        dense.set_epoch(epoch)
        for rank in range(WORLD):
            for call in batches(n, rank, epoch, batch):
                dense.record(*call)
    diffs = {}
    for name in dense.table_names:
        union = torch.cat([r["tables"][name] for r in ranks])
        diffs[name] = float((union.double() - dense.table(name).double()).abs().max())
    return {"n": n, "epochs": epochs, "max_abs_diff": diffs, "equal": max(diffs.values()) <= 1e-5}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e7])
    parser.add_argument("--check-size", type=float, default=1e6)
    parser.add_argument("--batch", type=int, default=1 << 18, help="entries per record call")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="N = 10**5, check at 10**4")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.check_size, args.batch = [1e5], 1e4, 1 << 12
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    print("| N | rank | table B/sample | buffered B/sample | RSS before ledger | peak RSS | record s | exchange s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        n = int(size)
        for r in run(n, 1, args.batch):
            rows.append({"n": n, **r})
            print(
                f"| {n:.0e} | {r['rank']} | {r['table_bytes_per_sample']:.1f} | {r['buffered_bytes_per_sample']:.1f}"
                f" | {r['rss_before_ledger_bytes'] / 2**30:.2f} GiB | {r['peak_rss_bytes'] / 2**30:.2f} GiB"
                f" | {r['record_s']:.2f} | {r['exchange_s']:.2f} |"
            )
    check = equality_check(int(args.check_size), args.batch)
    worst = max(check["max_abs_diff"], key=check["max_abs_diff"].get)
    print(f"equality at N={check['n']:.0e}, {check['epochs']} epochs: {'equal' if check['equal'] else 'DIFFERENT'}"
          f" (largest difference {check['max_abs_diff'][worst]:.2e} in {worst})")
    result = {"world": WORLD, "num_classes": NUM_CLASSES, "batch": args.batch, "runs": rows, "equality": check}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not check["equal"]:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
