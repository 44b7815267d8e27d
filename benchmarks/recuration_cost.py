"""Cost of re-curation: one full plan (ledger sync and statistics, all four noise filters,
prune, reweight, strength) and one ``Ledger.record`` call, for ledgers of N samples.

    python benchmarks/recuration_cost.py --sizes 1e5 1e6 1e7 --device cpu
    python benchmarks/recuration_cost.py --quick
    python benchmarks/recuration_cost.py --sizes 1e6 1e7 --ref fec2d3b --rounds 3

With ``--ref`` the plan is also timed with the package of that git ref, in fresh processes
that alternate between the two trees for ``--rounds`` rounds (so load on a shared machine hits
both alike); the comparison reports the minimum over every round and repeat (wall and CPU).

Prints a markdown table of medians: wall-clock time, and the process CPU time (all threads
together; on a shared machine it is less disturbed by other load than the wall clock), plus
the ledger's device memory and the snapshot's shared memory per sample (one process).
On CUDA, ``record`` runs under ``torch.cuda.set_sync_debug_mode("error")``, so any host
sync in it fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
from curated_loader.data.snapshot import CurationSnapshot

NUM_CLASSES = 10


def full_plan() -> CurationPlan:
    """Every stage active from epoch 0."""
    return CurationPlan(
        noise_filter=[
            SmallLossFilter(warmup_epochs=0),
            GMMFilter(warmup_epochs=0),
            AUMFilter(warmup_epochs=0),
            CartographyFilter(warmup_epochs=0),
        ],
        prune=InfoBatchPrune(warmup_epochs=0),
        reweight=Reweight(warmup_epochs=0),
        augment=AugmentStrength(warmup_epochs=0),
        seed=0,
        num_epochs=1000,
    )


def _batch(n: int, size: int, device: torch.device, g: torch.Generator):
    ids = torch.randint(n, (size,), device=device, generator=g)
    logits = torch.randn(size, NUM_CLASSES, device=device, generator=g)
    targets = torch.randint(NUM_CLASSES, (size,), device=device, generator=g)
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return ids, loss, logits, targets


def filled_ledger(n: int, device: torch.device, epochs: int = 2, chunk: int = 1 << 20) -> Ledger:
    """A ledger where every sample was recorded ``epochs`` times with logits."""
    ledger = Ledger(n, num_classes=NUM_CLASSES, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    for epoch in range(epochs):
        ledger.set_epoch(epoch)
        order = torch.randperm(n, device=device, generator=g)
        for start in range(0, n, chunk):
            _, loss, logits, targets = _batch(n, len(order[start : start + chunk]), device, g)
            ledger.record(order[start : start + chunk], loss, logits, targets)
        ledger.sync()
    return ledger


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """Median wall-clock and median process CPU seconds of ``fn`` (after one warm-up call)."""
    wall, cpu = _seconds(fn, repeats, device)
    return statistics.median(wall), statistics.median(cpu)


def _seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each of ``repeats`` calls of ``fn`` (after one
    warm-up call)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


@contextlib.contextmanager
def no_host_sync(device: torch.device) -> Iterator[None]:
    """``set_sync_debug_mode("error")`` on CUDA (any host synchronization raises), nothing elsewhere."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def measure(n: int, device: torch.device, repeats: int, batch: int) -> dict[str, float]:
    ledger = filled_ledger(n, device)
    plan = full_plan()
    g = torch.Generator(device=device).manual_seed(1)
    batches = [_batch(n, batch, device, g) for _ in range(repeats * 11 + 2)]
    it = iter(batches)

    def epoch_end() -> None:  # one batch recorded, so the sync inside decide has work to fold
        ledger.record(*next(it))
        plan.decide(ledger, 5)

    plan_wall, plan_cpu = _seconds(epoch_end, repeats, device)
    with no_host_sync(device):
        record_s, _ = _median_seconds(lambda: ledger.record(*next(it)), repeats * 10, device)
    return {
        "plan_s": statistics.median(plan_wall),
        "plan_cpu_s": statistics.median(plan_cpu),
        "plan_min_s": min(plan_wall),
        "plan_min_cpu_s": min(plan_cpu),
        "record_ms": record_s * 1e3,
        "mem_mb": ledger.bytes_per_sample * n / 2**20,
        "ledger_bytes": ledger.bytes_per_sample,
        "snapshot_bytes": CurationSnapshot(n).bytes_per_sample,
    }


def compare(ref: str, sizes: list[float], repeats: int, rounds: int, device: str) -> dict[str, dict[str, float]]:
    """Plan times of ``ref``'s package and this tree's, in alternating fresh processes: per N
    and tree, the minimum over all rounds and repeats of wall and CPU seconds."""
    from worker_augment_cost import ROOT, export

    script = Path(__file__).resolve()
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {ref: export(ref, Path(tmp)), "this tree": ROOT}
        for _ in range(rounds):
            for name, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(tree)}
                argv = [sys.executable, str(script), "--child", "--device", device, "--repeats", str(repeats),
                        "--sizes", *map(str, sizes)]
                out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                for row in json.loads(out.strip().splitlines()[-1]):
                    key = f"{row['N']}|{name}"
                    prev = best.get(key, {"wall": float("inf"), "cpu": float("inf")})
                    best[key] = {"wall": min(prev["wall"], row["plan_min_s"]), "cpu": min(prev["cpu"], row["plan_min_cpu_s"])}
    print(f"\nplan: {ref} against this tree, minimum over {rounds} alternating rounds of {repeats} repeats\n")
    print(f"| N | {ref} wall (s) | this tree wall (s) | {ref} CPU (s) | this tree CPU (s) | CPU this / {ref} |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        a, b = best[f"{int(size)}|{ref}"], best[f"{int(size)}|this tree"]
        print(f"| {int(size):,} | {a['wall']:.3f} | {b['wall']:.3f} | {a['cpu']:.3f} | {b['cpu']:.3f} | {b['cpu'] / a['cpu']:.2f} |")
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (for tests)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--ref", default=None, help="also time the plan with this git ref's package")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --ref")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one tree's rows as JSON
    args = parser.parse_args(argv)
    sizes, repeats = ([1e3, 1e4], 1) if args.quick else (args.sizes, args.repeats)
    device = torch.device(args.device)
    if args.child:
        print(json.dumps([{"N": int(size), **measure(int(size), device, repeats, args.batch)} for size in sizes]))
        return
    print(
        f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"record batch {args.batch}, median of {repeats} (record: {repeats * 10})\n"
    )
    print(
        "| N | plan (s) | plan per 1M samples (s) | plan CPU time (s) | record (ms) | ledger memory (MiB) "
        "| ledger B/sample | snapshot B/sample (shared) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for size in sizes:
        n = int(size)
        r = measure(n, device, repeats, args.batch)
        rows.append({"N": n, **r})
        per_million = r["plan_s"] / n * 1e6
        print(
            f"| {n:,} | {r['plan_s']:.3f} | {per_million:.3f} | {r['plan_cpu_s']:.3f} "
            f"| {r['record_ms']:.3f} | {r['mem_mb']:.0f} | {r['ledger_bytes']:.1f} | {r['snapshot_bytes']:.3f} |"
        )

    result: dict[str, object] = {"device": str(device), "rows": rows}
    if args.ref:
        result["against_ref"] = {"ref": args.ref, "rounds": args.rounds,
                                 "min_plan_s": compare(args.ref, sizes, repeats, args.rounds, args.device)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python", "benchmarks/recuration_cost.py", *(sys.argv[1:] if argv is None else argv)])
        args.json.write_text(json.dumps({"command": command, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
