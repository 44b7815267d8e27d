"""``curated-loader``: index shards, write shards (and, with training state, report/export)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from .data.shards import build_index, expand_urls


def _cmd_index(args: argparse.Namespace) -> int:
    index = build_index(expand_urls(args.shards), progress=not args.quiet)
    index.save(args.output)
    print(f"{index.num_shards} shards, {index.num_samples} samples → {args.output}")
    return 0


def _cmd_write(args: argparse.Namespace) -> int:
    from .data.writer import write_arrays, write_image_folder

    if args.images:
        index, classes = write_image_folder(args.images, args.out, prefix=args.prefix, samples_per_shard=args.per_shard)
        print(f"classes: {', '.join(classes)}")
    else:
        arrays = np.load(args.npz)
        for key in (args.x_key, args.y_key):
            if key not in arrays:
                raise SystemExit(f"{args.npz}: no array named {key!r} (has {sorted(arrays.files)})")
        index = write_arrays(arrays[args.x_key], arrays[args.y_key], args.out, input_ext=args.ext, prefix=args.prefix, samples_per_shard=args.per_shard)
    print(f"{index.num_shards} shards, {index.num_samples} samples → {args.out}/{args.prefix}-index.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curated-loader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="count samples per shard (tar headers only) and write a wids shard index")
    p.add_argument("shards", nargs="+", help="shard paths, brace patterns, globs or URLs")
    p.add_argument("-o", "--output", required=True, help="index JSON to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("write", help="write arrays (.npz) or a folder of labelled images as shards + index")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--npz", help=".npz file holding inputs and labels")
    source.add_argument("--images", help="folder with one sub-folder of images per class")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--x-key", default="x", help="inputs array in the .npz (default x)")
    p.add_argument("--y-key", default="y", help="labels array in the .npz (default y)")
    p.add_argument("--ext", default="npy", help="member suffix for inputs: npy, png, jpg (default npy)")
    p.add_argument("--prefix", default="train", help="shard name prefix (default train)")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    p.set_defaults(func=_cmd_write)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
