"""Scale of the sharded ledger: per-rank memory and the epoch-end phases, 2 gloo CPU ranks.

    nice -n 10 python benchmarks/scale.py --sizes 1e7 1e8 --json docs/results/scale.json
    python benchmarks/scale.py --sizes 1e8 --epochs 3 --keep-freed-memory   # epoch after epoch
    python benchmarks/scale.py --quick

For each N, two processes build a ``ShardedLedger(N, 10 classes)``, reserve its buffer and
record ``--epochs`` epochs (default 1) in bulk ``record`` calls: rank r gets the ids
``i ≡ r + epoch (mod 2)`` in shuffled batches (one record per id per epoch, as the loader
splits an epoch; half of each rank's ids belong to the other rank). Each epoch ends as the
callback ends it, in phases each timed on its own (the buffer is reserved again before the
next epoch):

* **sync**: the exchange (one ``all_gather`` of bucket counts, one ``all_to_all_single`` per
  round) and the owners' fold; the buffer is released afterwards (``release_buffer``);
* **plan**: :func:`plan_phase` — the owned slice's statistics, then ``CurationPlan.decide``
  with every policy kind that needs a global quantity (``sharded_plan.full_plan``: default
  noise filter, GMM filter, small-loss, InfoBatch, class-balanced reweighting, augmentation
  strength), each owner deciding its ids, and the decision all-gathered in the snapshot's
  compact format (3.125 bytes per sample);
* **publish**: :func:`publish_phase` — the gathered decision written into the compact
  ``CurationSnapshot``.

The memory figures and the table's times are the first epoch end's; every epoch end's times
and minor page faults are printed below it (and kept in ``epoch_ends``). With
``--keep-freed-memory`` the ranks start with glibc told to keep what they free
(:data:`KEEP_FREED_MEMORY`), so a later epoch end reuses the pages an earlier one touched.

Prints per rank: table and buffered bytes per sample of N, the process's RSS before the ledger,
its peak RSS (VmHWM) after recording (from here on with the snapshot's 3.125 B per sample of N,
made before the first record), after sync (also per owned sample) and during plan and publish (with the
plan's growth per owned sample), exchange rounds, wall time per phase and the sync's own phases (``ShardedLedger.last_sync_seconds``, and the CPU time of each, ``last_sync_cpu_seconds``); per N the slowest rank's sync + plan + publish and its ratio to the smallest N. Then the
equality check: at ``--check-size`` the two ranks record two epochs, and the union of their
slices is compared column by column with a dense single-process ``Ledger`` fed the same records.
A size whose estimated peak does not fit the available memory is refused before it starts.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import CurationPlan, Decision, InfoBatchPrune, Ledger, LossMarginFilter, ShardedLedger
from curated_loader.curation.sharded import DEFAULT_EXCHANGE_ROUND, DEFAULT_FOLD_CHUNK
from curated_loader.data.snapshot import PACKED_BYTES_PER_SAMPLE, CurationSnapshot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_json  # noqa: E402
from sharded_plan import full_plan, time_plan  # noqa: E402

WORLD, NUM_CLASSES = 2, 10
GiB = 2**30
#: glibc settings (``GLIBC_TUNABLES``) that keep freed memory in the process: no array gets a
#: mapping of its own (``mmap_max=0``) and the heap's free top is never handed back
#: (``trim_threshold``, 1 TiB), so an epoch end reuses the pages the previous one touched.
KEEP_FREED_MEMORY = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"


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


def _memory(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak) of this process, or ``MemAvailable`` of the machine, in bytes."""
    path = "/proc/meminfo" if field == "MemAvailable" else "/proc/self/status"
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{path} has no {field}")


def _reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def filter_prune_plan(seed: int = 0) -> CurationPlan:
    """The default noise filter, then InfoBatch: the plan of a large noisy data set."""
    return CurationPlan(noise_filter=LossMarginFilter(warmup_epochs=0), prune=InfoBatchPrune(warmup_epochs=0),
                        seed=seed, num_epochs=10)


#: ``--plan`` choices: every policy kind that needs a global quantity, or filter + prune.
PLANS = {"full": full_plan, "filter_prune": filter_prune_plan}


def plan_phase(ledger: ShardedLedger, epoch: int, plan: str = "full") -> tuple[Decision, dict[str, float]]:
    """Plan epoch ``epoch + 1`` over the synced ledger with ``PLANS[plan]``: the owned slice's
    statistics, each owner's decision and its all-gather in the snapshot's compact format.
    A collective."""
    timed = time_plan(ledger, PLANS[plan](), epoch + 1)
    return timed.pop("decision"), timed


def publish_phase(decision: Decision, snapshot: CurationSnapshot) -> float:
    """Write the gathered decision (all N ids, on every rank) into ``snapshot``; wall time."""
    t0 = time.perf_counter()
    decision.publish_to(snapshot)
    return time.perf_counter() - t0


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _epoch_end(ledger: ShardedLedger, snapshot: CurationSnapshot, epoch: int, plan: str) -> dict[str, Any]:
    """One epoch end as the callback runs it: sync, ``release_buffer``, plan, publish into
    ``snapshot`` (made once, as the data module makes it); their wall times, the sync's phases
    and the process's minor page faults over the three."""
    dist.barrier()
    faults = _minor_faults()
    t0 = time.perf_counter()
    ledger.sync()
    end: dict[str, Any] = {"epoch": epoch, "sync_s": time.perf_counter() - t0,
                           "sync_phases_s": dict(ledger.last_sync_seconds),
                           "sync_phases_cpu_s": dict(ledger.last_sync_cpu_seconds),
                           "sync_minor_faults": dict(ledger.last_sync_faults),
                           "exchange_rounds": ledger.last_exchange_rounds,
                           "peak_rss_after_sync_bytes": _memory("VmHWM")}
    ledger.release_buffer()
    dist.barrier()
    _reset_peak()
    end["rss_before_plan_bytes"] = _memory("VmRSS")
    decision, timed, end["publish_s"] = None, {"plan_s": 0.0, "stats_s": 0.0}, 0.0  # plan "none": the exchange alone
    if plan != "none":
        decision, timed = plan_phase(ledger, epoch, plan)
        dist.barrier()
        end["publish_s"] = publish_phase(decision, snapshot)
    end["minor_faults"] = _minor_faults() - faults  # the three phases (not the summary below)
    end["peak_rss_plan_publish_bytes"] = _memory("VmHWM")  # since the reset before the plan
    end["plan_s"], end["plan_stats_s"] = timed["plan_s"], timed["stats_s"]
    end["sync_plan_publish_s"] = end["sync_s"] + end["plan_s"] + end["publish_s"]
    end["decision"] = None if decision is None else {
        "kept": int(decision.keep.sum()), "flagged": decision.summary()["flagged"],
        "pruned": decision.summary()["pruned"], "gathered_bytes_per_sample": timed["gathered_bytes_per_sample"]}
    end["snapshot_bytes_per_sample"] = snapshot.bytes_per_sample
    end["snapshot_kept"] = int(snapshot.keep.sum())
    return end


def _worker(rank: int, port: int, n: int, epochs: int, batch: int, out: str, keep_tables: bool, plan: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        rss_before = _memory("VmRSS")  # the process before the ledger (python, torch, gloo)
        ledger = ShardedLedger(n, NUM_CLASSES)
        snapshot = CurationSnapshot(n)
        record_s, ends, buffered, buffer_bytes, peak_after_record = 0.0, [], 0, 0, 0
        for epoch in range(epochs):
            ledger.reserve((n + WORLD - 1) // WORLD)  # this rank's records of one epoch
            ledger.set_epoch(epoch)
            for call in batches(n, rank, epoch, batch):
                t0 = time.perf_counter()
                ledger.record(*call)
                record_s += time.perf_counter() - t0
            if epoch == 0:
                buffered, buffer_bytes, peak_after_record = ledger.buffered, ledger.buffer_bytes, _memory("VmHWM")
            ends.append(_epoch_end(ledger, snapshot, epoch, plan))
        first, owned = ends[0], max(ledger.num_owned, 1)
        result = {
            "rank": rank,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),  # as this rank's C library read it at start
            "owned": [ledger.lo, ledger.hi],
            "table_bytes_per_sample": ledger.table_bytes / n,
            "buffered_records": buffered,
            "buffered_bytes_per_sample": buffered * ledger.entry_bytes / n,
            "buffer_capacity_bytes_per_sample": buffer_bytes / n,
            "entry_bytes": ledger.entry_bytes,
            "rss_before_ledger_bytes": rss_before,
            "peak_rss_after_record_bytes": peak_after_record,
            "peak_rss_after_sync_per_owned": first["peak_rss_after_sync_bytes"] / owned,
            "peak_rss_above_start_per_owned": (first["peak_rss_after_sync_bytes"] - rss_before) / owned,
            "plan_peak_growth_per_owned": (first["peak_rss_plan_publish_bytes"] - first["rss_before_plan_bytes"]) / owned,
            "record_s": record_s / epochs,
            **first,  # the first epoch end's figures
            "epoch_ends": ends,
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


def run(n: int, epochs: int, batch: int, keep_tables: bool = False, plan: str = "full") -> list[dict]:
    """Run the two ranks; their result dicts in rank order."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(_free_port(), n, epochs, batch, out, keep_tables, plan), nprocs=WORLD, join=True)
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


#: The plan's growth of one rank's RSS per owned sample (stats of the owned slice read by the
#: policies, their temporaries, the gathered decision, heap left unreturned): the largest
#: ``plan_peak_growth_per_owned`` measured at N = 10**7 by
#: ``python benchmarks/scale.py --sizes 1e6 1e7 1e8`` (72-109 B over three runs of the two ranks;
#: 128-151 B before the plan's working set was cut), rounded up.
PLAN_BYTES_PER_OWNED = 110


def estimated_peak_bytes(n: int, batch: int, plan: bool = True) -> int:
    """A generous estimate of one rank's peak: table and buffer (48 B of table and at most 48 B
    of buffered record per owned id; a record is 40 B with 10 classes), the
    exchange's working set (sent, received, fold workspace), record's workspaces; or, with a
    plan, after the buffer is freed, the exchange's leftovers and the plan's growth
    (:data:`PLAN_BYTES_PER_OWNED`); the snapshot (3.125 B per sample of N, held from the
    start); 0.6 GiB for the process."""
    owned = -(-n // WORLD)
    exchange = 2 * 48 * DEFAULT_EXCHANGE_ROUND + 330 * DEFAULT_FOLD_CHUNK + 4 * 330 * batch
    planning = exchange + PLAN_BYTES_PER_OWNED * owned if plan else 0
    snapshot = int(PACKED_BYTES_PER_SAMPLE * n)
    return 48 * owned + max(48 * owned + exchange, planning) + snapshot + int(0.6 * GiB)


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


def _slowest_rank(rows: list[dict]) -> dict[int, list[float]]:
    """Per N, each epoch end's sync + plan + publish on the slowest rank, in epoch order."""
    ends: dict[int, list[float]] = {}
    for row in rows:
        seconds = [end["sync_plan_publish_s"] for end in row["epoch_ends"]]
        ends[row["n"]] = [max(a, b) for a, b in zip(ends.get(row["n"], seconds), seconds)]
    return ends


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e7])
    parser.add_argument("--check-size", type=float, default=1e6)
    parser.add_argument("--batch", type=int, default=1 << 18, help="entries per record call")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plan", choices=[*sorted(PLANS), "none"], default="full",
                        help="full: every policy kind that needs a global quantity; filter_prune: the default "
                             "noise filter, then InfoBatch; none: the exchange alone (no plan, no publish)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs recorded, each followed by its epoch end (sync, plan, publish)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help=f"launch the ranks with GLIBC_TUNABLES={KEEP_FREED_MEMORY}: freed arrays stay in the "
                             "process's heap for the next epoch end instead of going back to the kernel")
    parser.add_argument("--quick", action="store_true", help="N = 10**5, check at 10**4")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.check_size, args.batch = [1e5], 1e4, 1 << 12
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.keep_freed_memory:  # read by each rank's C library at its start (mp.spawn starts new interpreters)
        os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES"), KEEP_FREED_MEMORY]))
    rows, refused = [], []
    print("| N | rank | table B/sample | buffered B/sample | RSS before ledger | peak RSS after record | peak RSS after sync | per owned sample | above start per owned"
          " | peak RSS in plan + publish (growth in the plan per owned sample) | rounds | record s | sync s | plan s | publish s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        n = int(size)
        need, available = WORLD * estimated_peak_bytes(n, args.batch, args.plan != "none"), _memory("MemAvailable")
        if need > available:
            refused.append({"n": n, "estimated_bytes": need, "available_bytes": available})
            print(f"| {n:.0e} | refused: needs about {need / GiB:.1f} GiB for {WORLD} ranks, {available / GiB:.1f} GiB available |")
            continue
        for r in run(n, args.epochs, args.batch, plan=args.plan):
            rows.append({"n": n, **r})
            print(
                f"| {n:.0e} | {r['rank']} | {r['table_bytes_per_sample']:.1f} | {r['buffered_bytes_per_sample']:.1f}"
                f" | {r['rss_before_ledger_bytes'] / GiB:.2f} GiB | {r['peak_rss_after_record_bytes'] / GiB:.2f} GiB"
                f" | {r['peak_rss_after_sync_bytes'] / GiB:.2f} GiB"
                f" | {r['peak_rss_after_sync_per_owned']:.0f} B | {r['peak_rss_above_start_per_owned']:.0f} B | {r['peak_rss_plan_publish_bytes'] / GiB:.2f} GiB (+{r['plan_peak_growth_per_owned']:.0f} B) | {r['exchange_rounds']}"
                f" | {r['record_s']:.2f} | {r['sync_s']:.2f} | {r['plan_s']:.2f} | {r['publish_s']:.2f} |"
            )
    for r in rows:
        for end in r["epoch_ends"]:
            phases = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in end["sync_phases_s"].items())
            cpu = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in end["sync_phases_cpu_s"].items())
            print(f"N={r['n']:.0e} rank {r['rank']} epoch {end['epoch']}: sync {end['sync_s']:.2f} s, plan {end['plan_s']:.2f} s,"
                  f" publish {end['publish_s']:.2f} s, minor page faults {end['minor_faults']}; sync phases (s): {phases}; CPU (s): {cpu}")
    epoch_end = _slowest_rank(rows)
    smallest = min(epoch_end, default=None)
    for n, seconds in epoch_end.items():
        ratio = seconds[0] / epoch_end[smallest][0]
        later = f"; later epoch ends {', '.join(f'{s:.2f}' for s in seconds[1:])} s" if len(seconds) > 1 else ""
        print(f"N={n:.0e}: sync + plan + publish {seconds[0]:.2f} s (first epoch end, slowest rank), {ratio:.2f}x N={smallest:.0e}"
              f" for {n / smallest:.0f}x the samples{later}")
    check = equality_check(int(args.check_size), args.batch)
    worst = max(check["max_abs_diff"], key=check["max_abs_diff"].get)
    print(f"equality at N={check['n']:.0e}, {check['epochs']} epochs: {'equal' if check['equal'] else 'DIFFERENT'}"
          f" (largest difference {check['max_abs_diff'][worst]:.2e} in {worst})")
    result = {"world": WORLD, "num_classes": NUM_CLASSES, "batch": args.batch, "plan": args.plan, "epochs": args.epochs,
              "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "runs": rows, "refused": refused,
              "sync_plan_publish_s": {str(n): s[0] for n, s in epoch_end.items()},
              "epoch_ends_s": {str(n): s for n, s in epoch_end.items()}, "equality": check}
    write_json(args.json, result, indent=2)
    if not check["equal"]:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
