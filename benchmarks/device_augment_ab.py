"""Device-path augmentation, this tree against a git ref, interleaved in one process.

    python benchmarks/device_augment_ab.py [--ref main] [--rounds 40]

Loads ``curated_loader/augment`` of ``--ref`` (``git archive``) and of this tree as two
packages side by side and times ``augment_batch`` on one 256-batch at strength 0.5 for the
MNIST-1D signal Compose and the four image built-ins, alternating the trees every round (thread
CPU time, one torch thread), so load on a shared machine hits both alike. Prints the medians
over rounds and the median of per-round ratios (paired).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_pair(ref: str, into: Path) -> tuple:
    data = subprocess.run(["git", "archive", ref, "curated_loader/augment"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    (into / "curated_loader" / "augment").rename(into / "ref_augment")
    (into / "this_augment").symlink_to(ROOT / "curated_loader" / "augment")
    sys.path.insert(0, str(into))
    import ref_augment
    import this_augment

    return ref_augment, this_augment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="main")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        trees = dict(zip((args.ref, "this tree"), load_pair(args.ref, Path(tmp))))
        g = torch.Generator().manual_seed(0)
        cases = {
            "signal Compose [40]": (lambda m: m.Compose([m.Shift(max_shift=4), m.AmplitudeScale(a_max=0.2),
                                                         m.TimeStretch(s_max=0.1), m.GaussianNoise(sigma_max=0.05)]),
                                    torch.randn(256, 40, generator=g), 20),
            "image Compose [1, 28, 28]": (lambda m: m.Compose([m.RandomResizedCrop(field="x"), m.HorizontalFlip(field="x"),
                                                               m.ColorJitter(field="x"), m.RandomErasing(field="x")]),
                                          torch.rand(256, 1, 28, 28, generator=g), 5),
        }
        strength, ids = torch.full((256,), 0.5), torch.arange(256)
        print(f"| augmentation | {args.ref} CPU µs | this tree CPU µs | ratio of medians | paired ratio |")
        print("|---|---:|---:|---:|---:|")
        for name, (make, x, calls) in cases.items():
            fns = {tag: (lambda m=m, aug=make(m): m.augment_batch(aug, x, strength, ids, epoch=3, seed=0)) for tag, m in trees.items()}
            for fn in fns.values():
                for _ in range(20):
                    fn()
            times: dict[str, list[float]] = {tag: [] for tag in fns}
            for r in range(args.rounds):
                for tag in list(fns) if r % 2 == 0 else list(fns)[::-1]:
                    start = time.thread_time()
                    for _ in range(calls):
                        fns[tag]()
                    times[tag].append((time.thread_time() - start) / calls * 1e6)
            a, b = (statistics.median(times[t]) for t in fns)
            paired = statistics.median(y / x for x, y in zip(*times.values()))
            print(f"| {name} | {a:.0f} | {b:.0f} | {b / a:.3f} | {paired:.3f} |")


if __name__ == "__main__":
    main()
