"""Time ``write_noisy_mnist1d`` (the test suite's ``noisy_mnist1d`` data) by phase, and
print a checksum of what it wrote.

    python benchmarks/data_generation.py                         # 20 000 samples, seed 0
    python benchmarks/data_generation.py --fixed-clock 1.7e9     # byte-comparable checksums

Phases: ``make_mnist1d`` (the mnist1d package's generator) and the rest (label noise,
shard writing for train and test with the read-back index scan, the mask files). Tar members
carry the time they were written (webdataset's ``TarWriter`` default), so two runs only
write the same bytes when the clock is pinned: ``--fixed-clock T`` makes ``time.time()``
return T during the call. The checksum is a SHA-256 over every file written (name and
bytes, in name order) except the index files, which hold each shard's modification time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import tempfile
import time
from pathlib import Path
from unittest import mock

from curated_loader import datasets


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name.endswith("-index.json"):
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed-clock", type=float, default=None, help="what time.time() returns during the call")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    generator = datasets.make_mnist1d
    spent: list[tuple[float, float]] = []  # (wall, CPU) seconds of make_mnist1d

    def timed_make(*a, **kw):
        began = time.perf_counter(), time.process_time()
        try:
            return generator(*a, **kw)
        finally:
            spent.append((time.perf_counter() - began[0], time.process_time() - began[1]))

    with tempfile.TemporaryDirectory() as tmp:
        clock = mock.patch("time.time", return_value=args.fixed_clock) if args.fixed_clock is not None else contextlib.nullcontext()
        with clock, mock.patch.object(datasets, "make_mnist1d", timed_make):
            started, cpu = time.perf_counter(), time.process_time()
            datasets.write_noisy_mnist1d(tmp, num_samples=args.num_samples, seed=args.seed, progress=False)
            total, cpu = time.perf_counter() - started, time.process_time() - cpu
        digest = folder_digest(Path(tmp))
    (make_wall, make_cpu), = spent
    print(f"write_noisy_mnist1d({args.num_samples}): wall {total:.2f} s (make_mnist1d {make_wall:.2f} s, the rest {total - make_wall:.2f} s); "
          f"CPU {cpu:.2f} s (make_mnist1d {make_cpu:.2f} s, the rest {cpu - make_cpu:.2f} s)")
    print(f"sha256: {digest}" + ("" if args.fixed_clock is not None else " (clock not pinned: differs per run)"))
    if args.json:
        args.json.write_text(json.dumps({"num_samples": args.num_samples, "seed": args.seed, "fixed_clock": args.fixed_clock,
                                         "wall_s": total, "cpu_s": cpu, "make_mnist1d_wall_s": make_wall,
                                         "make_mnist1d_cpu_s": make_cpu, "sha256": digest}, indent=1) + "\n")


if __name__ == "__main__":
    main()
