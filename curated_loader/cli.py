"""``curated-loader``: index shards, write shards, report on and export a curated training run.

Every subcommand reports bad input or a failed write (missing file, disk full, read-only
folder, a bad option value) as one line on stderr, ``curated-loader <command>: error: ...``,
and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from .data.shards import ALLOW_PIPE_ENV, build_index, expand_urls, read_index_file


def _cmd_index(args: argparse.Namespace) -> int:
    try:
        urls = [u for item in args.shards for u in (read_index_file(item).urls if item.endswith(".json") else expand_urls(item))]
        index = build_index(urls, progress=not args.quiet)
    except _input_errors() as exn:
        return _fail("index", exn)
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
                raise ValueError(f"{args.npz}: no array named {key!r} (has {sorted(arrays.files)})")
        index = write_arrays(arrays[args.x_key], arrays[args.y_key], args.out, input_ext=args.ext, prefix=args.prefix, samples_per_shard=args.per_shard)
    print(f"{index.num_shards} shards, {index.num_samples} samples → {args.out}/{args.prefix}-index.json")
    return 0


def _shard_spec(items: Sequence[str]) -> str | list[str]:
    """One shard spec (a pattern or index JSON) as a string, several as a list."""
    return items[0] if len(items) == 1 else list(items)


def error_line(exn: BaseException) -> str:
    """One line describing an error: an ``OSError`` as ``<reason>: <file>``, else its message."""
    if isinstance(exn, OSError) and exn.strerror:
        text = f"{exn.strerror}: {exn.filename}" if exn.filename else exn.strerror
    else:
        text = str(exn) or type(exn).__name__
    return " ".join(text.split())


def _fail(command: str, exn: BaseException) -> int:
    print(f"curated-loader {command}: error: {error_line(exn)}", file=sys.stderr)
    return 2


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or a failed write, not a bug: reported in one line."""
    from .data.errors import ShardError
    from .reporting.checkpoint import CheckpointError
    from .reporting.export import ExportError

    return (CheckpointError, ExportError, ShardError, OSError, ValueError)


def _cmd_report(args: argparse.Namespace) -> int:
    from .reporting.report import write_report

    page = write_report(args.checkpoint, _shard_spec(args.shards), args.out, top_k=args.top,
                        state_key=args.state_key, weights_only=not args.trusted, progress=not args.quiet)
    print(f"report → {page} (plots and summary.json beside it)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .reporting.export import export_curated

    result = export_curated(args.checkpoint, _shard_spec(args.shards), args.out, drop=args.drop,
                            prefix=args.prefix, samples_per_shard=args.per_shard, overwrite=args.overwrite,
                            state_key=args.state_key, weights_only=not args.trusted, progress=not args.quiet)
    print(result.describe())
    print(f"manifest of removed and reweighted samples → {result.manifest_path}")
    return 0


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="Lightning checkpoint (.ckpt) written with a CurationCallback, or the "
                   "curation_state.pt the callback writes into the trainer's log dir when fit ends")
    p.add_argument("--shards", nargs="+", required=True,
                   help="the training shards the checkpoint was made with (pattern, glob, list or index JSON)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--state-key", default=None, help="callback state key, if the checkpoint holds several")
    p.add_argument("--trusted", action="store_true",
                   help="the checkpoint is trusted: allow full unpickling (weights_only=False)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_allow_pipe(p)


def _add_allow_pipe(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-pipe", action="store_true",
                   help=f"let pipe: URLs listed in index JSON files run as shell commands (as {ALLOW_PIPE_ENV}=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curated-loader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="count samples per shard (tar headers only) and write a wids shard index")
    p.add_argument("shards", nargs="+", help="shard paths, brace patterns, globs, URLs or index JSONs to re-scan")
    p.add_argument("-o", "--output", required=True, help="index JSON to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_allow_pipe(p)
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

    p = sub.add_parser("report", help="HTML report of a run's curation decisions (+ plots, summary.json)")
    _add_checkpoint_args(p)
    p.add_argument("--top", type=int, default=24, help="suspicious samples to show with previews (default 24)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="write the curated dataset as new shards + index + manifest of removals")
    _add_checkpoint_args(p)
    p.add_argument("--drop", choices=("flagged", "pruned"), default="flagged",
                   help="flagged: remove noise-filter flags (default); pruned: also the samples pruning skipped")
    p.add_argument("--prefix", default="train", help="shard name prefix, a plain file name (default train)")
    p.add_argument("--per-shard", type=int, default=None,
                   help="samples per new shard (default: one new shard per source shard)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (swapped in only once the new one is complete)")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "allow_pipe", False):
        os.environ[ALLOW_PIPE_ENV] = "1"  # reaches every index read of this command
    try:
        return args.func(args)
    except _input_errors() as exn:
        return _fail(args.command, exn)


if __name__ == "__main__":
    sys.exit(main())
