"""Per-sample cost of augmentation in a loader worker, this tree against a git ref, in one run.

    python benchmarks/worker_augment_cost.py [--ref main] [--json docs/results/worker_augment_cost.json]
    python benchmarks/worker_augment_cost.py --path device --samples 256 [--json ...]

``--path device`` times the batched device path instead (``augment_batch`` on one batch of
``--samples``, on the CPU), per batch.

The worker path calls ``aug(sample, strength)`` on one loader sample dict at a time (the
decoded tensor plus ``__id__``, ``__epoch__``, ``__seed__``, ``__repeat__``). Two Composes:
the MNIST-1D signal one (shift, amplitude, time stretch, noise on ``[40]`` signals) and the
four image built-ins (crop, flip, colour, erasing on ``[1, 28, 28]``), at strength 0.5.
Each measurement runs in a fresh process on one torch thread; the two trees (``git archive``
of ``--ref`` and this working tree) alternate for ``--rounds`` rounds so load on a shared
machine hits both alike. Figures: median over rounds of the per-round median µs/sample
(thread CPU time, and wall clock).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
import torch
from curated_loader.augment import (AmplitudeScale, ColorJitter, Compose, GaussianNoise, HorizontalFlip,
                                    RandomErasing, RandomResizedCrop, Shift, TimeStretch)
torch.set_num_threads(1)
samples, repeats, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from curated_loader.augment import augment_batch
g = torch.Generator().manual_seed(0)
cases = {
    "signal Compose [40]": (Compose([Shift(max_shift=4, field="x"), AmplitudeScale(a_max=0.2, field="x"),
                                     TimeStretch(s_max=0.1, field="x"), GaussianNoise(sigma_max=0.05, field="x")]),
                            torch.randn(samples, 40, generator=g)),
    "image Compose [1, 28, 28]": (Compose([RandomResizedCrop(field="x"), HorizontalFlip(field="x"),
                                           ColorJitter(field="x"), RandomErasing(field="x")]),
                                  torch.rand(samples, 1, 28, 28, generator=g)),
}
out = {}
for name, (aug, data) in cases.items():
    if path == "device":
        strength, ids = torch.full((samples,), 0.5), torch.arange(samples)
        calls, per = [lambda: augment_batch(aug, data, strength, ids, epoch=3, seed=0)] * 20, 20
    else:
        batch = [{"x": data[i], "__id__": i, "__epoch__": 3, "__seed__": 0, "__repeat__": 0} for i in range(samples)]
        calls, per = [lambda sample=sample: aug(sample, 0.5) for sample in batch], samples
    for call in calls[:20]:
        call()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.thread_time(), time.perf_counter()
        for call in calls:
            call()
        cpu.append((time.thread_time() - c) / per)
        wall.append((time.perf_counter() - w) / per)
    out[name] = {"cpu_us": statistics.median(cpu) * 1e6, "wall_us": statistics.median(wall) * 1e6}
print(json.dumps(out))
"""


def export(ref: str, into: Path) -> Path:
    """The ``curated_loader`` package of ``ref`` under ``into`` (for PYTHONPATH)."""
    data = subprocess.run(["git", "archive", ref, "curated_loader"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path, samples: int, repeats: int, path: str = "worker") -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(samples), str(repeats), path], env=env, cwd=tree,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="main", help="git ref to compare against")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", default="worker", choices=("worker", "device"),
                        help="per-sample worker calls, or augment_batch on one batch of --samples")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {args.ref: export(args.ref, Path(tmp)), "this tree": ROOT}
        runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(measure(tree, args.samples, args.repeats, args.path))
    cases = list(runs[args.ref][0])
    result = {
        name: {case: {k: statistics.median(r[case][k] for r in rs) for k in ("cpu_us", "wall_us")} for case in cases}
        for name, rs in runs.items()
    }
    unit = "sample" if args.path == "worker" else f"batch of {args.samples}"
    print(f"{args.path} path, µs per {unit} (median of {args.rounds} alternating rounds, 1 torch thread)\n")
    print(f"| augmentation | {args.ref} CPU | this tree CPU | ratio | {args.ref} wall | this tree wall |")
    print("|---|---:|---:|---:|---:|---:|")
    for case in cases:
        a, b = result[args.ref][case], result["this tree"][case]
        print(f"| {case} | {a['cpu_us']:.0f} | {b['cpu_us']:.0f} | {b['cpu_us'] / a['cpu_us']:.2f} "
              f"| {a['wall_us']:.0f} | {b['wall_us']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python", "benchmarks/worker_augment_cost.py", *sys.argv[1:]])
        key = "us_per_sample" if args.path == "worker" else "us_per_batch"
        args.json.write_text(json.dumps({"command": command, key: result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
