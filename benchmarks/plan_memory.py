"""How a sharded plan's memory accumulates, policy by policy (2 gloo ranks).

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=65536 python benchmarks/plan_memory.py --size 1e7 [--json OUT.json]

Both ranks record one epoch (``scale.batches``) and sync, then rank 0 reports, for each policy
of ``sharded_plan.full_plan`` and for the decision's gather, the process's resident memory at
its entry, its peak inside (VmHWM, reset at entry) and at its exit, in bytes per owned id above
the RSS just before ``decide``. With glibc's mmap threshold lowered (the command above) every
array of more than 64 KiB is its own mapping, so RSS follows what is alive.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from results import write_json  # noqa: E402
from scale import _free_port, _memory, _reset_peak  # noqa: E402


def _traced(function: Any, label: str, log: list) -> Any:
    @functools.wraps(function)
    def traced(*args: Any, **kwargs: Any) -> Any:
        entry = _memory("VmRSS")
        _reset_peak()
        out = function(*args, **kwargs)
        log.append((label, entry, _memory("VmHWM"), _memory("VmRSS")))
        return out

    return traced


def _worker(rank: int, port: int, n: int, out: str) -> None:
    from sharded_plan import NUM_CLASSES, full_plan, recorded

    from curated_loader.curation import Decision, ShardedLedger

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = recorded(ShardedLedger(n, NUM_CLASSES), rank)
        ledger.release_buffer()
        plan, log = full_plan(), []
        for policy in (*plan.noise_filters, plan.prune, plan.reweight, plan.augment):
            kind = type(policy)
            kind.function = staticmethod(_traced(kind.function, kind.function.__name__, log))
        Decision.gathered = _traced(Decision.gathered, "decision gather", log)
        stats = ledger.stats(sync=False)
        start = _memory("VmRSS")
        plan.decide(stats, 1)
        owned = ledger.num_owned
        rows = [{"stage": label, "entry": (a - start) / owned, "peak": (p - start) / owned, "exit": (b - start) / owned}
                for label, a, p, b in log]
        torch.save(rows, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e7)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(_free_port(), int(args.size), out), nprocs=2, join=True)
        rows = torch.load(Path(out) / "rank0.pt")
    print(f"N = {args.size:.0e}, rank 0, B per owned id above the RSS before decide (in completion order)\n")
    print("| stage | entry | peak | exit |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['stage']} | {row['entry']:.1f} | {row['peak']:.1f} | {row['exit']:.1f} |")
    if args.json:
        write_json(args.json, {"size": args.size, "rank": 0, "bytes_per_owned_id_above_rss_before_decide": rows})
    return rows


if __name__ == "__main__":
    main()
