"""What one loader worker's epoch plan costs at large N: wall time and memory.

    python benchmarks/epoch_plan.py --sizes 1e7 1e8 --json docs/results/epoch_plan.json
    PYTHONPATH=/path/to/other/tree python benchmarks/epoch_plan.py ...   # another package, same cases

Every loader worker of every rank plans each epoch itself from the snapshot (and the main
process does once more for the epoch's batch count): how often each sample is read (its
multiplicity: keep, or with ``resample`` the weight stochastically rounded), then its share
(stream mode: the shards dealt to it, from the per-shard sums; indexed mode: the kept ids,
shuffled, dealt). Each case runs in a process of its own: a snapshot of N samples (60 % kept,
weights in [0, 3)) over 10,000 shards, then one plan as worker 0 of 4 on rank 0 of 2, timed,
with the process's peak RSS growth over the plan (``VmHWM`` after resetting it, minus
``VmRSS`` before). The package is the one ``curated_loader`` resolves to (``PYTHONPATH``
decides), so two trees can be compared case by case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from results import write_json

SHARDS, WORKERS, WORLD = 10_000, 4, 2
MiB = 1 << 20


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def one_case(n: int, mode: str, resample: bool) -> dict:
    """Plan one epoch as one worker would; seconds and peak RSS growth (this process)."""
    import curated_loader
    from curated_loader.data.epoch import multiplicity, plan_epoch
    from curated_loader.data.shards import ShardIndex
    from curated_loader.data.snapshot import CurationSnapshot

    index = ShardIndex([f"shard-{i:05d}.tar" for i in range(SHARDS)], np.full(SHARDS, n // SHARDS))
    snapshot = CurationSnapshot(index.num_samples)
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(index.num_samples, generator=g) < 0.6
    weight = torch.where(keep, torch.rand(index.num_samples, generator=g) * 3, torch.zeros(()))
    snapshot.publish(keep, weight, torch.zeros(index.num_samples), version=1)
    del keep, weight
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status("VmRSS")
    t0 = time.perf_counter()
    view = snapshot.view()
    mult = multiplicity(view, 0, 1, resample)
    plan = plan_epoch(index, mult, seed=0, epoch=1, rank=0, world_size=WORLD, worker=0, num_workers=WORKERS,
                      batch_size=256, mode=mode)
    seconds = time.perf_counter() - t0
    return {"n": index.num_samples, "mode": mode, "resample": resample, "seconds": seconds,
            "peak_growth_bytes": _status("VmHWM") - before, "rank_batches": int(plan.rank_batches),
            "package": str(Path(curated_loader.__file__).parent)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e7])
    parser.add_argument("--modes", nargs="+", default=["stream", "indexed"], choices=["stream", "indexed"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--case", nargs=3, metavar=("N", "MODE", "RESAMPLE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # a child: one case, its row on stdout
        n, mode, resample = args.case
        print(json.dumps(one_case(int(float(n)), mode, resample == "1")))
        return {}
    rows = []
    print("| N | mode | resample | s | peak RSS growth |\n|---:|---|---|---:|---:|")
    for n in args.sizes:
        for mode in args.modes:
            for resample in (False, True):
                out = subprocess.run([sys.executable, __file__, "--case", f"{n:g}", mode, str(int(resample))],
                                     check=True, capture_output=True, text=True).stdout
                row = json.loads(out.splitlines()[-1])
                rows.append(row)
                print(f"| {n:.0e} | {mode} | {resample} | {row['seconds']:.2f} | {row['peak_growth_bytes'] / MiB:,.0f} MiB |",
                      flush=True)
    result = {"command": "python benchmarks/epoch_plan.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "shards": SHARDS, "workers": WORKERS, "world": WORLD, "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
