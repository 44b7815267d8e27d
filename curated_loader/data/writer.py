"""Turn arrays, (input, label) pairs or a folder of labelled images into shards + index."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .shards import ShardIndex, build_index
from .tarwrite import ShardTarWriter

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm"}


def write_samples(
    samples: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike,
    *,
    prefix: str = "train",
    samples_per_shard: int = 1000,
    total: int | None = None,
    progress: bool = True,
) -> ShardIndex:
    """Write webdataset samples (dicts of ``ext -> value`` plus ``__key__``) as
    ``{prefix}-000000.tar, ...`` and an index ``{prefix}-index.json`` beside them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pattern = str(out / f"{prefix}-%06d.tar")
    urls: list[str] = []
    counts: list[int] = []
    with ShardTarWriter(pattern, maxcount=samples_per_shard) as sink:
        for sample in tqdm(samples, total=total, desc=f"writing {prefix} shards", unit="sample", disable=not progress):
            sink.write(sample)
            if not urls or urls[-1] != sink.fname:
                urls.append(sink.fname)
                counts.append(0)
            counts[-1] += 1
    index = build_index(urls, progress=False)  # fingerprints (size, mtime, members) for staleness checks
    if index.counts.tolist() != counts:
        raise RuntimeError(f"shards written to {out} read back with {index.counts.tolist()} samples, not {counts}")
    index_path = out / f"{prefix}-index.json"
    index.save(index_path)
    return index


def _encode_input(value: Any) -> Any:
    return value if isinstance(value, (bytes, str)) else np.asarray(value)


def pair_samples(pairs: Iterable[tuple[Any, Any]], input_ext: str = "npy", key_prefix: str = "") -> Iterator[dict]:
    """``(input, label)`` pairs → samples ``{__key__, <input_ext>, cls}``.

    Arrays are written with webdataset's encoders by extension (``npy``: the array;
    ``png``/``jpg``: an HWC or HW uint8 array or a PIL image).
    """
    for i, (value, label) in enumerate(pairs):
        yield {"__key__": f"{key_prefix}{i:08d}", input_ext: _encode_input(value), "cls": int(label)}


def write_arrays(
    inputs: np.ndarray,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    input_ext: str = "npy",
    prefix: str = "train",
    samples_per_shard: int = 1000,
    progress: bool = True,
) -> ShardIndex:
    """Write ``inputs[i]`` with label ``labels[i]`` for every i."""
    if len(inputs) != len(labels):
        raise ValueError(f"inputs ({len(inputs)}) and labels ({len(labels)}) differ in length")
    pairs = zip(inputs, labels)
    return write_samples(pair_samples(pairs, input_ext), out_dir, prefix=prefix, samples_per_shard=samples_per_shard, total=len(labels), progress=progress)


def write_image_folder(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "train",
    samples_per_shard: int = 1000,
    progress: bool = True,
) -> tuple[ShardIndex, list[str]]:
    """Write ``folder/<class name>/<image>`` as shards (the image bytes as they are, label =
    the class's position in sorted class names). Returns the index and the class names."""
    root = Path(folder)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: expected one sub-folder per class")
    files = [(f, label) for label, name in enumerate(classes) for f in sorted((root / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]

    def samples() -> Iterator[dict]:
        for i, (path, label) in enumerate(files):
            ext = path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
            yield {"__key__": f"{i:08d}", ext: path.read_bytes(), "cls": label}

    index = write_samples(samples(), out_dir, prefix=prefix, samples_per_shard=samples_per_shard, total=len(files), progress=progress)
    return index, classes
