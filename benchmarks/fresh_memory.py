"""What touching fresh host memory costs on this machine, as a process grows.

    python benchmarks/fresh_memory.py --gib 18 --json docs/results/fresh_memory.json

Allocates and fills ``--gib`` arrays of 1 GiB one after the other (all kept alive) and prints,
for each, the seconds, the minor page faults and the microseconds per fault. On a machine whose
memory is backed on demand by a hypervisor, a page the guest has not touched lately costs far
more than one it recycles; the epoch-end phases at N = 10^8 (two ranks, 7-8 GiB each) reach that
region, which is why their figures depend on how much fresh memory they touch
(docs/benchmarks.md, "Scale"). Refuses to run past the memory available now.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch
from results import write_json

GiB = 1 << 30


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=int, default=18, help="GiB to allocate, 1 GiB at a time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.gib * GiB > available_bytes() - GiB:
        raise SystemExit(f"--gib {args.gib} would not fit: {available_bytes() / GiB:.1f} GiB available")
    held, rows = [], []
    print("| GiB held | s | minor faults | µs per fault |\n|---:|---:|---:|---:|")
    for i in range(args.gib):
        faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        held.append(torch.empty(GiB, dtype=torch.uint8).fill_(1))
        seconds = time.perf_counter() - t0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        rows.append({"gib_held": i + 1, "seconds": seconds, "minor_faults": faults,
                     "us_per_fault": 1e6 * seconds / max(faults, 1)})
        print(f"| {i + 1} | {seconds:.2f} | {faults} | {rows[-1]['us_per_fault']:.1f} |", flush=True)
    result = {"total_memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
