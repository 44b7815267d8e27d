"""The sharded ledger's exchange (``ShardedLedger.sync``) phase by phase, 2 gloo CPU ranks.

    nice -n 10 python benchmarks/sync_profile.py --size 1e7 --repeats 3
    python benchmarks/sync_profile.py --size 1e8 --repeats 2 --json docs/results/sync_profile_1e8.json

Each rank records one epoch as ``benchmarks/scale.py`` does (rank r the ids ``≡ r (mod 2)``,
each once, half of them the other rank's), then syncs ``--repeats`` times the same buffered
records (each sync folds them again: the same work every time). Per rank and sync it prints the
wall seconds, the exchange rounds, and per phase (``last_sync_seconds``,
``last_sync_cpu_seconds``, ``last_sync_faults``) wall seconds, CPU seconds and minor page
faults; before that the CPU time and minor faults of its ``record`` calls (``--record-batch``
entries each; in this order each call holds one owner's ids) and the records buffered; then a checksum of the owned table, equal across versions of the exchange that fold
the same records (``--save`` writes the tables, for a bitwise comparison). ``--exchange-round`` below its default gives 10^8's number of rounds at
10^7 (with ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576``, 10^8's fresh memory too).

``--record-only CALLS`` times ``record`` alone: each rank records CALLS calls of
``--record-batch`` random ids of ``[0, N)`` (about half its own, as a shuffling loader hands
them; made before the clock starts) with logits and targets, and prints the aten ops of one call and the CPU time per call.

    nice -n 10 python benchmarks/sync_profile.py --size 1e7 --record-only 2000 --record-batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

from curated_loader.curation import ShardedLedger
from curated_loader.curation.sharded import DEFAULT_EXCHANGE_ROUND

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import NUM_CLASSES, WORLD, batches  # noqa: E402


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active."""

    count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _say(line: str) -> None:
    """Print ``line`` in one write: both ranks print to one stdout, and with PYTHONUNBUFFERED a
    ``print`` writes its text and its newline apart, so the ranks' lines could run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _record_cost(ledger: ShardedLedger, rank: int, calls: int, batch: int) -> None:
    """Print the aten ops of one ``record`` call and the CPU time per call of ``batch`` random ids (``calls`` calls)."""
    g = torch.Generator().manual_seed(rank)
    made = []
    for _ in range(calls):
        ids = torch.randint(ledger.num_samples, (batch,), generator=g)
        logits = torch.randn(batch, NUM_CLASSES, generator=g)
        targets = ids % NUM_CLASSES
        made.append((ids, torch.nn.functional.cross_entropy(logits, targets, reduction="none"), logits, targets))
    ledger.record(*made[0])  # the workspace for this batch size
    with _OpCounter() as ops:
        ledger.record(*made[0])
    cpu = time.thread_time()
    for call in made[1:]:
        ledger.record(*call)
    per_call = (time.thread_time() - cpu) / max(calls - 1, 1)
    _say(f"rank {rank} record only: {calls - 1} calls of {batch} random ids, cpu {1e6 * per_call:.1f} us per call,"
          f" {ops.count} aten ops per call, {ledger.buffered} records buffered")


def _worker(
    rank: int, port: int, n: int, exchange_round: int, repeats: int, record_batch: int, record_only: int, save: str, out: str,
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        ledger = ShardedLedger(n, NUM_CLASSES, exchange_round=exchange_round)
        ledger.reserve((n + WORLD - 1) // WORLD)
        ledger.set_epoch(0)
        if record_only:
            _record_cost(ledger, rank, record_only, record_batch)
            return
        calls, record_cpu, record_faults = 0, 0.0, 0
        for call in batches(n, rank, 0, record_batch):
            faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.thread_time()
            ledger.record(*call)
            record_cpu += time.thread_time() - cpu
            record_faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            calls += 1
        buffered = ledger.buffered
        figures: dict = {"rank": rank, "n": n, "record_calls": calls, "record_batch": record_batch,
                         "record_cpu_s": record_cpu, "record_faults": record_faults, "buffered_records": buffered, "syncs": []}
        _say(f"rank {rank} record: {calls} calls of {record_batch} entries, cpu {1e6 * record_cpu / calls:.1f} us per call,"
              f" {record_faults} faults, {buffered} records buffered")
        for repeat in range(repeats):
            ledger._used = buffered  # the same records again (sync reads the blocks, never writes them)
            dist.barrier()
            faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            ledger.sync()
            seconds, faults = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            phase_faults = getattr(ledger, "last_sync_faults", {})  # absent before the ledger counted them
            phases = " | ".join(
                f"{phase} {ledger.last_sync_seconds[phase]:.2f} s, cpu {ledger.last_sync_cpu_seconds[phase]:.2f} s"
                + (f", {phase_faults[phase]} faults" if phase in phase_faults else "") for phase in ledger.last_sync_seconds)
            figures["syncs"].append({"wall_s": seconds, "faults": faults, "rounds": ledger.last_exchange_rounds,
                                     "phases_s": dict(ledger.last_sync_seconds), "phases_cpu_s": dict(ledger.last_sync_cpu_seconds),
                                     "phases_faults": dict(phase_faults)})
            _say(f"rank {rank} sync {repeat}: {seconds:.2f} s, cpu {sum(ledger.last_sync_cpu_seconds.values()):.2f} s,"
                  f" {faults} faults, {ledger.last_exchange_rounds} rounds | {phases}")
        owned = ledger._owned._table[:, : ledger.num_owned]  # not the scratch row: it is no sample's
        figures["checksum"] = float(owned.double().sum())
        _say(f"rank {rank} owned table checksum {figures['checksum']:.6f}")
        if out:
            Path(f"{out}.rank{rank}").write_text(json.dumps(figures))
        if save:
            torch.save(owned.clone(), f"{save}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e7)
    parser.add_argument("--exchange-round", type=int, default=DEFAULT_EXCHANGE_ROUND)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--record-batch", type=int, default=1 << 18, help="entries per record call")
    parser.add_argument("--save", default="", help="save each rank's owned table to SAVE.rank<r>.pt (to compare trees)")
    parser.add_argument("--record-only", type=int, default=0, metavar="CALLS", help="time CALLS record calls of random ids, no sync")
    parser.add_argument("--json", default="", help="write every rank's figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, int(args.size), args.exchange_round, args.repeats, args.record_batch, args.record_only, args.save, args.json),
             nprocs=WORLD, join=True)
    if args.json and not args.record_only:
        parts = [Path(f"{args.json}.rank{rank}") for rank in range(WORLD)]
        ranks = [json.loads(part.read_text()) for part in parts]
        Path(args.json).write_text(json.dumps({"command": " ".join(["python", "benchmarks/sync_profile.py", *(argv or sys.argv[1:])]),
                                               "load_average": os.getloadavg(), "ranks": ranks}, indent=1))
        for part in parts:
            part.unlink()


if __name__ == "__main__":
    main()
