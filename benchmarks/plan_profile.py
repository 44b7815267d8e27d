"""Where a full plan's time goes, stage by stage, over a dense ledger or a sharded one (2 gloo ranks).

    nice -n 10 python benchmarks/plan_profile.py --ledger dense --size 1e7
    nice -n 10 python benchmarks/plan_profile.py --ledger sharded --size 1e7
    PYTHONPATH=/path/to/other/tree python benchmarks/plan_profile.py ...   # another package, same plan

The dense ledger is ``recuration_cost.filled_ledger`` with ``recuration_cost.full_plan`` (all four
noise filters, InfoBatch, reweighting, strength); the sharded one records one epoch of
``scale.batches`` on each of 2 gloo ranks with ``sharded_plan.full_plan`` (default filter, GMM,
small-loss, InfoBatch, class-balanced reweighting, strength). Each of ``--repeats`` plans
(``decide`` over ``stats(sync=False)``, after one warm-up unless ``--cold``) is timed: minor page
faults, wall, process CPU and the
main thread's CPU (a sharded rank computes on its main thread alone, while the process CPU
also counts gloo's threads, which spin while a collective waits); the
last one runs under cProfile, whose cumulative seconds per stage are printed (a stage's function
and what it calls; ``collective waits`` is the time spent waiting in gloo): wall seconds, or with
``--cpu-clock`` the main thread's CPU seconds, which time spent waiting for the other rank or for
a core (a loaded machine) does not inflate; page faults count in both. Beside each stage's
seconds stand the minor page faults of its calls in that plan (``counting_faults``): fresh
memory, what a cold plan at large N pays for most. The package is the
one ``curated_loader`` resolves to (``PYTHONPATH`` decides), so two trees can be compared with
the same plan; ``--save`` writes the decision (rank 0) for a bit-for-bit comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks (not the package)

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from results import write_json

#: Stage name -> the functions (by name) whose cumulative time it is.
STAGES = {
    "stats": ("stats",),
    "noise filters": ("_filter",),
    "  small-loss": ("small_loss",),
    "  GMM": ("gmm",),
    "  default filter": ("loss_margin",),
    "  AUM": ("aum",),
    "  cartography": ("cartography",),
    "InfoBatch": ("infobatch",),
    "  its draws": ("uniform_draws",),
    "reweighting": ("sample_weights",),
    "  class balance": ("balance_classes",),
    "strength": ("strength",),
    "quantiles": ("quantile",),
    "decision gather": ("gathered",),
    "collective waits": ("<built-in method torch._C._distributed_c10d.wait>",),
}


def _stage_seconds(profile: cProfile.Profile) -> dict[str, float]:
    table = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    out = {}
    for stage, names in STAGES.items():
        out[stage] = sum(row[3] for (path, _, name), row in table.items()
                         if name in names and ("curated_loader" in path or path == "~"))
    return out


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@contextlib.contextmanager
def counting_faults(faults: dict[str, int]):
    """While open, add to ``faults[stage]`` the minor page faults of each call of a stage's
    functions (by name, as :data:`STAGES` names them, in ``curated_loader``'s modules and
    classes; a stage's nested calls count once). They are wrapped, which cProfile does not
    see: it still times the original functions inside."""
    stage_of = {name: stage for stage, names in STAGES.items() for name in names}
    depth: dict[str, int] = {}

    def wrap(function: Any) -> Any:
        stage = stage_of[function.__name__]

        @functools.wraps(function)
        def counted(*args: Any, **kwargs: Any) -> Any:
            depth[stage] = depth.get(stage, 0) + 1
            before = _minor_faults() if depth[stage] == 1 else 0
            try:
                return function(*args, **kwargs)
            finally:
                depth[stage] -= 1
                if not depth[stage]:
                    faults[stage] = faults.get(stage, 0) + _minor_faults() - before

        return counted

    wrapped: dict[Any, Any] = {}
    undo = []

    def patch(owner: Any, name: str, value: Any) -> None:
        function = value.__func__ if isinstance(value, staticmethod) else value
        if not callable(function) or getattr(function, "__name__", None) not in stage_of:
            return
        if not getattr(function, "__module__", "").startswith("curated_loader") or isinstance(function, type):
            return
        new = wrapped.setdefault(function, wrap(function))
        undo.append((owner, name, value))
        setattr(owner, name, staticmethod(new) if isinstance(value, staticmethod) else new)

    for module in [m for name, m in sys.modules.items() if name.startswith("curated_loader") and m is not None]:
        for name, value in list(vars(module).items()):
            if isinstance(value, type) and value.__module__ == module.__name__:
                for attr, member in list(vars(value).items()):
                    patch(value, attr, member)
            else:
                patch(module, name, value)
    try:
        yield faults
    finally:
        for owner, name, value in reversed(undo):
            setattr(owner, name, value)


def time_plans(
    ledger: Any, plan: Any, epoch: int, repeats: int, cold: bool = False, cpu_clock: bool = False
) -> dict[str, Any]:
    """Wall and CPU seconds and minor page faults of ``repeats`` plans (after a warm-up
    unless ``cold``), the last profiled (on the main thread's CPU clock if ``cpu_clock``)."""
    distributed = dist.is_available() and dist.is_initialized()
    if not cold:
        plan.decide(ledger.stats(sync=False), epoch)
    wall, cpu, thread, faults = [], [], [], []
    profile = cProfile.Profile(time.thread_time) if cpu_clock else cProfile.Profile()
    stage_faults: dict[str, int] = {}
    for i in range(repeats):
        if distributed:
            dist.barrier()
        last = i == repeats - 1
        with counting_faults(stage_faults) if last else contextlib.nullcontext():
            t, c, m, f = time.perf_counter(), time.process_time(), time.thread_time(), _minor_faults()
            if last:
                profile.enable()
            decision = plan.decide(ledger.stats(sync=False), epoch)
            if last:
                profile.disable()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        thread.append(time.thread_time() - m)
        faults.append(_minor_faults() - f)
    return {"wall_s": wall, "cpu_s": cpu, "thread_cpu_s": thread, "minor_faults": faults,
            "stages_s": _stage_seconds(profile), "stage_faults": stage_faults, "decision": decision}


def _sharded_worker(rank: int, port: int, n: int, repeats: int, cold: bool, cpu_clock: bool, out: str) -> None:
    from sharded_plan import NUM_CLASSES, full_plan, recorded

    from curated_loader.curation import ShardedLedger

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = recorded(ShardedLedger(n, NUM_CLASSES), rank)
        torch.save(time_plans(ledger, full_plan(), 1, repeats, cold, cpu_clock), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", choices=("dense", "sharded"), default="dense")
    parser.add_argument("--size", type=float, default=1e6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="no warm-up plan: time the process's first plans")
    parser.add_argument("--cpu-clock", action="store_true", help="profile stages on the main thread's CPU clock")
    parser.add_argument("--save", type=Path, help="write rank 0's decision tensors here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n = int(args.size)
    import curated_loader

    package = str(Path(curated_loader.__file__).parent)
    if args.ledger == "dense":
        from recuration_cost import filled_ledger, full_plan

        rows = [time_plans(filled_ledger(n, torch.device("cpu")), full_plan(), 5, args.repeats, args.cold, args.cpu_clock)]
        threads = torch.get_num_threads()
    else:
        from scale import _free_port

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with tempfile.TemporaryDirectory() as out:
            mp.spawn(_sharded_worker, args=(_free_port(), n, args.repeats, args.cold, args.cpu_clock, out), nprocs=2, join=True)
            rows = [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(2)]
        threads = 1
    print(f"package {package}; {args.ledger} ledger, N = {n:.0e}, {threads} thread(s) per process, "
          f"load average {os.getloadavg()[0]:.1f}")
    for rank, row in enumerate(rows):
        print(f"rank {rank}: plan wall {', '.join(f'{s:.2f}' for s in row['wall_s'])} s; "
              f"process CPU {', '.join(f'{s:.2f}' for s in row['cpu_s'])} s; "
              f"main-thread CPU {', '.join(f'{s:.2f}' for s in row['thread_cpu_s'])} s; "
              f"minor page faults {', '.join(str(f) for f in row['minor_faults'])}")
    clock = "main-thread CPU s" if args.cpu_clock else "s"
    print("\n| stage (cumulative, last plan, profiled) | " + " | ".join(
        f"rank {r} {clock} | rank {r} minor faults" for r in range(len(rows))) + " |")
    print("|---|" + "---:|---:|" * len(rows))
    for stage in STAGES:
        print(f"| {stage} | " + " | ".join(f"{row['stages_s'][stage]:.3f} | {row['stage_faults'].get(stage, '')}"
                                          for row in rows) + " |")
    if args.save:
        d = rows[0]["decision"]
        torch.save({k: getattr(d, k) for k in ("keep", "weight", "strength", "reason", "score", "reason_counts",
                                                "kept_moments")},
                   args.save)
    result = {"package": package, "ledger": args.ledger, "n": n, "stage_clock": "thread_cpu" if args.cpu_clock else "wall", "load_average": os.getloadavg()[0],
              "ranks": [{k: v for k, v in row.items() if k != "decision"} for row in rows]}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
