"""Seeded fuzzing of the tar reader: mutated headers and pax records of real shards.

Every case must end in a good read or a ShardError — within a CPU-time limit, and with
scan and stream agreeing on the sample count. A longer run than the suite's::

    python -m tests.data.tarfuzz --cases 100000 --seed 1      # or: make fuzz
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import signal
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds

from curated_loader.data.errors import ShardError
from curated_loader.data.tario import scan_layout, stream_samples
from tests.fixtures import make_fixtures

CAP = 1 << 20  # max_member_bytes for the fuzzed reads: streams may never allocate more
CPU_SECONDS_PER_CASE = 2.0
_FIELDS = {"name": (0, 100), "mode": (100, 8), "size": (124, 12), "checksum": (148, 8), "type": (156, 1),
           "magic": (257, 6), "prefix": (345, 155)}
_VALUES = [b"", b"0", b"00000000000\0", b"77777777777\0", b"zz", b"-1", b"+12", b"1_0", b"\xff" * 12,
           b"\x80" + (100 << 30).to_bytes(11, "big"), b"\x80" + (5).to_bytes(11, "big"), b"x", b"L", b"K", b"g",
           b"5", b"1", b"2", b"S", b"\0", b"ustar\0", b"ustar ", b"../" * 40, b"a" * 100, b"\xc3\x28"]
_PAX_RECORDS = [b"0 mtime=1\n", b"zz path=x\n", b"99 path=x\n", b"1 \n", b"3 =\n", b"12 size=zz\n", b"20 size=99999999999\n",
                b"9 path=\n", b"999999999999999999999 a=b\n", b"11 path=y\n\0\0", b"6 a=b\n", b"5 a=b\n", b" 5 a=b\n"]


class CaseTimeout(Exception):
    pass


@dataclass(frozen=True)
class Region:
    start: int  # first header block of a member (its extended headers included)
    data: int  # where the member's data starts


def seed_shards(folder: Path) -> list[bytes]:
    """Uncompressed tar bytes of real shards: written by webdataset, and the repo's fixtures."""
    path = folder / "wds.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(6):
            sink.write({"__key__": f"k{i:03d}", "npy": np.full(3, i, np.float32), "cls": i % 3, "txt": "t" * (i * 97)})
    shards = [path.read_bytes()]
    for name in make_fixtures.FOLDERS:
        data = (make_fixtures.HERE / name).read_bytes()
        shards.append(gzip.decompress(data) if name.endswith(".gz") else data)
    return shards


def regions(data: bytes) -> list[Region]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [Region(m.offset, m.offset_data) for m in tf.getmembers()]


def _fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


def mutate(data: bytes, layout: list[Region], rng: random.Random) -> bytes:
    """One random corruption of a header (or pax record) of ``data``, whose members lie at ``layout``."""
    out = bytearray(data)
    region = rng.choice(layout)
    block_at = rng.randrange(region.start, region.data, 512)
    action = rng.random()
    if action < 0.05:
        return bytes(out[: rng.randrange(len(out))])  # truncated anywhere
    if action < 0.25 and b"=" in out[block_at : block_at + 512] and out[region.start + 156] in b"xg":
        start = out.index(b"\n", block_at) + 1 if rng.random() < 0.5 and b"\n" in out[block_at : block_at + 512] else block_at
        record = rng.choice(_PAX_RECORDS)
        out[start : start + len(record)] = record  # a pax record replaced in place
        return bytes(out)
    block = out[block_at : block_at + 512]
    if action < 0.6:
        offset, width = rng.choice(list(_FIELDS.values()))
        value = rng.choice(_VALUES)[:width]
        block[offset : offset + width] = value.ljust(width, b"\0") if rng.random() < 0.7 else value.rjust(width, b" ")
    else:
        for _ in range(rng.randint(1, 4)):
            block[rng.randrange(512)] = rng.randrange(256)
    if rng.random() < 0.85:
        _fix_checksum(block)
    out[block_at : block_at + 512] = block
    return bytes(out)


def _on_cpu_limit(signum, frame):
    raise CaseTimeout()


def check_case(path: Path) -> str:
    """Scan and stream one shard under the CPU limit: "ok" or "error"; anything else raises."""
    old = signal.signal(signal.SIGPROF, _on_cpu_limit)
    signal.setitimer(signal.ITIMER_PROF, CPU_SECONDS_PER_CASE)
    try:
        try:
            count = scan_layout(str(path), CAP).nsamples
        except ShardError:
            count = None
        try:
            streamed = len(list(stream_samples(str(path), lambda pos: True, max_member_bytes=CAP)))
        except ShardError:
            streamed = None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
    if count is not None and streamed is not None and count != streamed:
        raise AssertionError(f"{path}: scan counts {count} samples, the stream {streamed}")
    return "ok" if count is not None else "error"


def cases(seed: int, n: int, folder: Path) -> Iterator[tuple[int, Path]]:
    """``n`` mutated shards on disk (every fourth one gzip-compressed, so read as a stream)."""
    rng = random.Random(seed)
    shards = [(data, regions(data)) for data in seed_shards(folder)]
    for i in range(n):
        data = mutate(*rng.choice(shards), rng)
        path = folder / ("case.tar.gz" if i % 4 == 3 else "case.tar")
        path.write_bytes(gzip.compress(data, mtime=0) if i % 4 == 3 else data)
        yield i, path


def fuzz(seed: int, n: int) -> dict[str, int]:
    """Run ``n`` cases; raises (naming seed and case) on a hang, a crash or a disagreement."""
    outcomes = {"ok": 0, "error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in cases(seed, n, Path(tmp)):
            try:
                outcomes[check_case(path)] += 1
            except BaseException as exn:
                kept = Path(tmp).parent / f"tarfuzz-seed{seed}-case{i}{''.join(path.suffixes)}"
                kept.write_bytes(path.read_bytes())
                raise AssertionError(f"seed {seed} case {i} ({kept}): {type(exn).__name__}: {exn}") from exn
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    outcomes = fuzz(args.seed, args.cases)
    print(f"{args.cases} cases (seed {args.seed}) in {time.perf_counter() - start:.0f} s: "
          f"{outcomes['ok']} read, {outcomes['error']} ShardError, no hang or other error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
