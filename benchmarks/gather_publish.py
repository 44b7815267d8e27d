"""The decision's all-gather and its publish into the snapshot, alone, on 2 gloo CPU ranks.

    nice -n 10 python benchmarks/gather_publish.py --size 1e7 --repeats 3
    python benchmarks/gather_publish.py --size 1e8
    PYTHONPATH=/path/to/other/tree python benchmarks/gather_publish.py ...   # another package

Each rank builds the decision a plan gives its owned slice (``owned_range``: ids kept with
probability 0.7, weights ``1 / 0.7`` or 0 and a spread of strengths, from a seeded generator),
creates a ``CurationSnapshot(N)``, then ``--repeats`` times: a barrier, ``Decision.gathered``
(the all-gather of the compact format and its decode on every rank), a barrier,
``Decision.publish_to``. Prints per rank and phase the wall seconds and minor page faults of
each repeat (the first is cold: fresh memory), and the snapshot's kept count.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable (an import keeps sys.path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import Decision
from curated_loader.curation.sharded import owner_reducer, owned_range
from curated_loader.data.snapshot import CurationSnapshot

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks
from scale import _free_port  # noqa: E402

WORLD = 2


def owned_decision(n: int, rank: int, epoch: int = 1) -> Decision:
    """A plan-like decision over rank ``rank``'s owned ids (seeded by rank)."""
    lo, hi = owned_range(n, rank, WORLD)
    g = torch.Generator().manual_seed(1000 + rank)
    keep = torch.rand(hi - lo, generator=g) < 0.7
    weight = torch.where(keep, torch.rand(hi - lo, generator=g).add_(0.5), torch.zeros(()))
    strength = torch.rand(hi - lo, generator=g)
    reason = torch.zeros(hi - lo, dtype=torch.int8)
    return Decision(keep, weight, strength, reason, torch.zeros(hi - lo), epoch)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _worker(rank: int, port: int, n: int, repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        lo, _ = owned_range(n, rank, WORLD)
        local, reducer = owned_decision(n, rank), owner_reducer(n, lo)
        snapshot = CurationSnapshot(n)
        rows = []
        for _ in range(repeats):
            dist.barrier()
            t, f = time.perf_counter(), _faults()
            decision = local.gathered(reducer)
            gather = (time.perf_counter() - t, _faults() - f)
            dist.barrier()
            t, f = time.perf_counter(), _faults()
            decision.publish_to(snapshot)
            publish = (time.perf_counter() - t, _faults() - f)
            rows.append({"gather": gather, "publish": publish})
            del decision
        torch.save({"rows": rows, "kept": int(snapshot.keep.sum())}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e7, help="N, the number of samples")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    n = int(args.size)
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(_free_port(), n, args.repeats, out), nprocs=WORLD, join=True)
        results = [torch.load(Path(out) / f"rank{r}.pt") for r in range(WORLD)]
    print(f"N = {n:.0e}, {WORLD} gloo ranks ({torch.__version__})")
    print("| rank | repeat | gather s | gather faults | publish s | publish faults |")
    print("|---|---|---|---|---|---|")
    for rank, result in enumerate(results):
        for i, row in enumerate(result["rows"]):
            (gs, gf), (ps, pf) = row["gather"], row["publish"]
            print(f"| {rank} | {i} | {gs:.3f} | {gf} | {ps:.3f} | {pf} |")
    print("snapshot kept:", [r["kept"] for r in results])


if __name__ == "__main__":
    main()
