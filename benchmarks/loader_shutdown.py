"""How long the loader workers of an epoch ended by a worker's error stay behind.

    python benchmarks/loader_shutdown.py                 # 2 workers, non-persistent and persistent

Writes four shards, hides the last one so that a worker raises a ShardError mid-epoch, reads
the epoch until the error, then drops every reference to it (as a caller does once it has
handled the error) and times a garbage collection plus the workers' exit. Prints, per
setting, whether the workers were still alive when the error arrived, the seconds until they
were gone, and their exit codes (0: they left their loop; -15: torch had to kill them).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from curated_loader.data.errors import ShardError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.writer import write_samples


def _samples(n: int):
    for i in range(n):
        yield {"__key__": f"s{i:07d}", "npy": np.full(4, i, dtype=np.float32), "cls": i % 10}


def failed_epoch(folder: Path, workers: int, persistent: bool) -> tuple[bool, float, list]:
    index = write_samples(_samples(48), folder, samples_per_shard=12, progress=False)
    last = Path(index.urls[-1])
    loader = CuratedLoader(CuratedStream(index, fields=("npy", "cls"), decode=(), batch_size=4, shuffle=False),
                           num_workers=workers, persistent_workers=persistent)
    before = set(multiprocessing.active_children())
    procs: list = []
    os.rename(last, last.with_suffix(".away"))
    try:
        for _ in loader:
            procs = procs or [p for p in multiprocessing.active_children() if p not in before]
    except ShardError:
        pass
    else:
        raise RuntimeError("the epoch ended without the expected ShardError")
    finally:
        os.rename(last.with_suffix(".away"), last)
    alive = any(p.is_alive() for p in procs)
    del loader
    started = time.monotonic()
    gc.collect()
    for p in procs:
        p.join(timeout=60)
    return alive, time.monotonic() - started, [p.exitcode for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    rows = []
    for persistent in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            alive, seconds, codes = failed_epoch(Path(tmp), args.workers, persistent)
        rows.append({"persistent_workers": persistent, "alive_after_error": alive, "seconds": seconds, "exit_codes": codes})
        print(f"persistent_workers={persistent}: alive after the error={alive}, gone after {seconds:.2f} s, exit codes {codes}")
    if args.json:
        args.json.write_text(json.dumps({"workers": args.workers, "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
