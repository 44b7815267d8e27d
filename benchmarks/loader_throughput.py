"""Loader throughput: a plain webdataset pipeline vs the curated pipeline doing the same work.

    python benchmarks/loader_throughput.py            # 8 x 1000 JPEG shards, 256x256
    python benchmarks/loader_throughput.py --quick    # tiny, for the test suite

Both pipelines decode JPEGs, random-crop + flip, and batch with torch's default collate (which,
in a worker, stacks straight into shared memory; webdataset's own collation adds a copy), with
the same workers and batch size and persistent workers; runs alternate and each figure is the median epoch time of
``--repeats`` epochs after a warm-up epoch. Reported: curated/vanilla samples per second at
keep = 100%, and the curated epoch time at keep = 50% over the vanilla full-epoch time.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from curated_loader import CuratedLoader, CuratedStream
from curated_loader.data.writer import write_samples

CROP = 224


def photo_like_jpeg(rng: np.random.Generator, size: int) -> bytes:
    """A JPEG of smooth colour fields plus fine texture: about 20 KB at 256x256, q=85,
    which is what natural photos of that size weigh."""
    low = rng.random((8, 8, 3)) * 255
    base = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BICUBIC), dtype=np.float32)
    texture = rng.normal(0, 8, (size, size, 1))
    img = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_shards(out: Path, shards: int, per_shard: int, size: int) -> str:
    rng = np.random.default_rng(0)
    samples = ({"__key__": f"{i:08d}", "jpg": photo_like_jpeg(rng, size), "cls": i % 10} for i in range(shards * per_shard))
    write_samples(samples, out, prefix="bench", samples_per_shard=per_shard, total=shards * per_shard, progress=False)
    return str(out / "bench-index.json")


def crop_flip(image: torch.Tensor) -> torch.Tensor:
    """Random crop to CROP x CROP and a random horizontal flip (per-process torch RNG)."""
    _, h, w = image.shape
    top = int(torch.randint(0, h - CROP + 1, ()))
    left = int(torch.randint(0, w - CROP + 1, ()))
    image = image[:, top : top + CROP, left : left + CROP]
    return image.flip(-1) if torch.rand(()) < 0.5 else image


class CropFlipSample:
    """The same crop/flip as a curated ``transform`` (sample dict in, sample dict out)."""

    def __call__(self, sample: dict) -> dict:
        sample["jpg"] = crop_flip(sample["jpg"])
        return sample


def vanilla_loader(urls: list[str], batch: int, workers: int) -> DataLoader:
    ds = (
        wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker, empty_check=False)
        .decode("torchrgb")
        .to_tuple("jpg", "cls")
        .map_tuple(crop_flip, lambda y: y)
        .batched(batch, partial=True, collation_fn=default_collate)
    )
    return DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0)


def curated_loader(index: str, batch: int, workers: int, mode: str, keep_fraction: float) -> CuratedLoader:
    ds = CuratedStream(index, fields=("jpg", "cls"), batch_size=batch, mode=mode, shuffle=False, decode=("torchrgb",), transform=CropFlipSample())
    if keep_fraction < 1.0:
        keep = torch.from_numpy(np.random.default_rng(1).random(ds.num_samples) < keep_fraction)
        ds.snapshot.publish(keep, version=0)
    return CuratedLoader(ds, num_workers=workers, persistent_workers=workers > 0)


def epoch_time(loader) -> tuple[float, int]:
    start = time.perf_counter()
    n = sum(len(batch[1]) for batch in loader)
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 x 64 small images, 1 repeat")
    parser.add_argument("--data", help="folder for the shards (default: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.shards, args.per_shard, args.size, args.repeats, args.batch = 2, 64, CROP + 8, 1, 16
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.data or tmp)
        index = make_shards(out, args.shards, args.per_shard, args.size)
        urls = [str(p) for p in sorted(out.glob("bench-*.tar"))]
        total = args.shards * args.per_shard
        loaders = {
            "vanilla": vanilla_loader(urls, args.batch, args.workers),
            "curated stream, keep 100%": curated_loader(index, args.batch, args.workers, "stream", 1.0),
            "curated stream, keep 50%": curated_loader(index, args.batch, args.workers, "stream", 0.5),
            "curated indexed, keep 50%": curated_loader(index, args.batch, args.workers, "indexed", 0.5),
        }
        times: dict[str, list[float]] = {name: [] for name in loaders}
        counts: dict[str, int] = {}
        for name, loader in loaders.items():  # warm-up: workers start, page cache fills
            epoch_time(loader)
        for _ in range(args.repeats):
            for name, loader in loaders.items():  # alternate the pipelines within each round
                seconds, n = epoch_time(loader)
                times[name].append(seconds)
                counts[name] = n
        median = {name: statistics.median(t) for name, t in times.items()}
        base = median["vanilla"]
        print(f"{total} JPEG samples ({args.size}x{args.size}) in {args.shards} shards, batch {args.batch}, "
              f"{args.workers} workers, median of {args.repeats} epochs after a warm-up\n")
        print("| pipeline | samples | epoch s | samples/s | vs vanilla |")
        print("|---|---:|---:|---:|---:|")
        for name, seconds in median.items():
            rate = counts[name] / seconds
            ratio = (rate / (counts["vanilla"] / base)) if "100%" in name else seconds / base
            label = "throughput ratio" if "100%" in name else "epoch-time ratio"
            print(f"| {name} | {counts[name]} | {seconds:.2f} | {rate:.0f} | {ratio:.3f} ({label}) |" if name != "vanilla"
                  else f"| {name} | {counts[name]} | {seconds:.2f} | {rate:.0f} | 1 |")


if __name__ == "__main__":
    main()
