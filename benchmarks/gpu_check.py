"""The GPU checks in one run: re-curation cost, tracking overhead, and a short end-to-end
training with ``torch.cuda.set_sync_debug_mode("error")`` around every tracked step.

    python benchmarks/gpu_check.py                 # on a CUDA machine (a few minutes)
    python benchmarks/gpu_check.py --quick         # smaller sizes
    python benchmarks/gpu_check.py --dry-run       # no GPU needed: the same plumbing on CPU, tiny

Parts:

1. ``benchmarks/recuration_cost.py --sizes 1e5 1e6 1e7 --device cuda`` — one full plan and
   one ``Ledger.record`` (the latter under sync-debug "error"), per N.
2. ``benchmarks/tracking_overhead.py --device cuda`` — curated epochs in one Trainer, the
   step with ``curated_loss`` vs a plain cross-entropy step and the device-path augmentation,
   each under sync-debug "error" (0 host syncs). Goals on a GPU: tracked / plain <= 1.01,
   augmentation <= 5% of a plain step; a miss is reported as "missed goal" (exit status 1).
3. End to end: noisy MNIST-1D shards → ``CuratedStream`` / ``CuratedLoader`` → the CNN on the
   GPU; each step (forward, per-sample loss, ``ledger.record``, weighted loss, backward, Adam
   step) runs under ``set_sync_debug_mode("error")``, so any host synchronisation in the
   tracked step raises. Between epochs ``plan.decide`` (GMM filter + InfoBatch) and
   ``publish_to`` run normally (they may sync: they are once per epoch).

Without CUDA (and without ``--dry-run``) it prints that there is no GPU and exits 0.
Prints one markdown table at the end; exit status 1 when a part failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: make the repository importable (an import keeps sys.path)
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts

import torch
import torch.nn.functional as F
from recuration_cost import no_host_sync

PARTS = ("recuration", "tracking", "e2e")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _run_script(args: list[str], timeout: float) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=_env(), check=False)
        out, rc = proc.stdout + ("\n" + proc.stderr if proc.returncode else ""), proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, rc = f"timed out after {timeout:.0f} s\n{exc.stdout or ''}", 124
    return rc, out, time.perf_counter() - start


def _table_rows(text: str) -> list[list[str]]:
    """Data rows of the markdown tables in ``text`` (header and rule lines dropped)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line.replace("|", "").strip()) <= set("-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(cells)
    return rows


def recuration(device: str, sizes: list[str], timeout: float) -> list[list[str]]:
    script = str(ROOT / "benchmarks" / "recuration_cost.py")
    args = [script, "--quick", "--device", device] if sizes == ["quick"] else [script, "--sizes", *sizes, "--device", device]
    rc, out, _seconds = _run_script(args, timeout)
    if rc != 0:
        return [["recuration_cost", "FAILED", f"exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}"]]
    return parse_recuration(out)


def parse_recuration(out: str) -> list[list[str]]:
    """One row per N of ``recuration_cost.py``'s table."""
    rows = _table_rows(out)[1:]  # drop the header row
    return [[f"re-curation, N = {r[0]}", "ok", f"plan {r[1]} s; record {r[4]} ms (no host sync); ledger {r[5]} MiB"]
            for r in rows]


def tracking(device: str, quick: bool, timeout: float) -> list[list[str]]:
    args = [str(ROOT / "benchmarks" / "tracking_overhead.py"), "--device", device] + (["--quick"] if quick else [])
    rc, out, _seconds = _run_script(args, timeout)
    if rc != 0:
        return [["tracking overhead", "FAILED", f"exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}"]]
    return parse_tracking(out, judge=device == "cuda")


# goals on a GPU: tracking costs at most 1% of a step, device-path augmentation at most 5%
TRACKING_GOAL, AUGMENT_GOAL = 1.01, 0.05


def parse_tracking(out: str, judge: bool = True) -> list[list[str]]:
    """The rows for ``tracking_overhead.py``'s output: tracked / plain step and device-path
    augmentation / plain step (wall clock), each against its GPU goal when ``judge``."""
    rows = {r[0]: r for r in _table_rows(out)}
    plain = rows.get("plain step", ["", "?"])[1]
    tracked = rows.get("tracked step (curated_loss)", ["", "?"])[1]
    augment = rows.get("device-path augmentation", ["", "?"])[1]
    found: dict[str, float] = {}
    for line in out.splitlines():
        for key, prefix in (("tracking", "tracked / plain step:"), ("augment", "device augmentation / plain step:")):
            if line.startswith(prefix):
                found[key] = float(line[len(prefix):].split()[0].rstrip("%")) / (100 if key == "augment" else 1)
    if len(found) < 2:
        return [["tracking overhead", "FAILED", "could not read the ratios from tracking_overhead.py"]]

    def status(value: float, goal: float) -> str:
        return ("ok" if value <= goal else "missed goal") if judge else "ok"

    note = "" if judge else " (dry run: the goal applies on a GPU)"
    sync = "no host sync" if judge else "no sync check on CPU"
    return [
        ["tracking overhead (tracked / plain step)", status(found["tracking"], TRACKING_GOAL),
         f"{found['tracking']:.3f} (goal <= {TRACKING_GOAL}){note}; plain {plain} ms, tracked {tracked} ms; {sync}"],
        ["device-path augmentation / plain step", status(found["augment"], AUGMENT_GOAL),
         f"{found['augment']:.1%} (goal <= {AUGMENT_GOAL:.0%}){note}; {augment} ms per batch; {sync}"],
    ]


def end_to_end(device: torch.device, samples: int, epochs: int, workers: int) -> list[list[str]]:
    from curated_loader import CuratedLoader, CuratedStream
    from curated_loader.curation import CurationPlan, GMMFilter, InfoBatchPrune, Ledger
    from curated_loader.datasets import write_noisy_mnist1d
    from curated_loader.models import Signal1DCNN

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_noisy_mnist1d(tmp, num_samples=samples, noise_rate=0.4, progress=False,
                                    samples_per_shard=max(samples // 16, 50))
        stream = CuratedStream(paths.train_index, fields=("npy", "cls"), decode=(), batch_size=256, seed=0)
        loader = CuratedLoader(stream, num_workers=workers, persistent_workers=workers > 0)
        test = CuratedLoader(CuratedStream(paths.test_index, fields=("npy", "cls"), decode=(), batch_size=1024, shuffle=False))
        torch.manual_seed(0)
        model = Signal1DCNN().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        ledger = Ledger(stream.num_samples, num_classes=10, device=device)
        warmup = max(1, epochs // 2)
        plan = CurationPlan(noise_filter=GMMFilter(loss_key="mean_loss", tau=0.1, warmup_epochs=warmup),
                            prune=InfoBatchPrune(ratio=0.5, warmup_epochs=warmup), seed=0, num_epochs=epochs)
        steps, step_seconds, decide_seconds = 0, 0.0, 0.0
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            ledger.set_epoch(epoch)
            for x, y, ids, weights in loader:
                x, y = x.to(device, torch.float32, non_blocking=True), y.to(device, non_blocking=True)
                ids, weights = ids.to(device, non_blocking=True), weights.to(device, non_blocking=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                with no_host_sync(device):
                    logits = model(x)
                    loss = F.cross_entropy(logits, y, reduction="none")
                    ledger.record(ids, loss.detach(), logits.detach(), y)
                    ((weights * loss).sum() / weights.sum()).backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                step_seconds += time.perf_counter() - start
                steps += 1
            start = time.perf_counter()
            decision = plan.decide(ledger, epoch + 1)
            decision.publish_to(stream.snapshot)
            decide_seconds += time.perf_counter() - start
        summary = decision.summary()
        passes = int(ledger.table("count").sum())
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y, _ids, _w in test:
                correct += int((model(x.to(device, torch.float32)).argmax(-1).cpu() == y).sum())
                total += len(y)
        mode = "sync-debug error" if device.type == "cuda" else "CPU dry run, no sync check"
        return [
            [f"end to end, {stream.num_samples} samples x {epochs} epochs", "ok",
             (f"{steps} tracked steps under {mode}, mean {1e3 * step_seconds / max(steps, 1):.2f} ms/step; "
              f"plan + publish {1e3 * decide_seconds / epochs:.1f} ms/epoch")],
            ["end to end, curation", "ok",
             (f"{passes} sample passes ({passes / (epochs * stream.num_samples):.0%} of full epochs); "
              f"last decision flags {summary['flagged']}, prunes {summary['pruned']}; "
              f"test accuracy {correct / max(total, 1):.3f}")],
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (N up to 1e6, short training)")
    parser.add_argument("--dry-run", action="store_true", help="run the plumbing on CPU at tiny sizes")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per sub-benchmark")
    parser.add_argument("--workers", type=int, default=2, help="loader workers in the end-to-end part")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="which checks to run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.dry_run:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU available on this machine; nothing to check. "
              "Run it on a GPU machine, or pass --dry-run to exercise the plumbing on CPU.")
        return 0
    else:
        device = torch.device("cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"# gpu_check on {name}, torch {torch.__version__}\n", flush=True)
    rows: list[list[Any]] = []
    if args.dry_run:
        sizes, samples, epochs, workers = ["quick"], 1000, 3, 0
    elif args.quick:
        sizes, samples, epochs, workers = ["1e5", "1e6"], 5000, 4, args.workers
    else:
        sizes, samples, epochs, workers = ["1e5", "1e6", "1e7"], 20000, 8, args.workers
    start = time.perf_counter()
    if "recuration" in args.parts:
        rows += recuration(device.type, sizes, args.timeout)
        print(f"re-curation done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "tracking" in args.parts:
        rows += tracking(device.type, args.dry_run or args.quick, args.timeout)
        print(f"tracking overhead done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "e2e" in args.parts:
        try:
            rows += end_to_end(device, samples, epochs, workers)
        except Exception as exc:  # noqa: BLE001  (reported: the table says FAILED, exit status 1)
            rows.append(["end to end", "FAILED", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"])
        print(f"end to end done ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print("| check | status | result |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    failed = [r for r in rows if r[1] != "ok"]
    print(f"\n{len(rows) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
