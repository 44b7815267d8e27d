"""Tar reading: header scans (for the index and member offsets) and sample streams.

Samples are grouped the webdataset way: consecutive members sharing the path up to the
first dot of the basename form one sample. The n-th such group of a shard is its sample at
position n, which is what gives every sample a stable id.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

from .errors import ShardError
from .tarscan import Member, TarFormatError, TarReader


def local_path(url: str) -> str | None:
    """The filesystem path behind ``url`` if it names a local file, else None."""
    if url.startswith("file:"):
        return urlparse(url).path if url.startswith("file://") else url[len("file:") :]
    if "://" in url or url.startswith("pipe:"):
        return None
    return url


def _split(name: str) -> tuple[str | None, str | None]:
    """(key, lower-case suffix) of a member name; (None, None) for members that are no field."""
    base = os.path.basename(name)
    if base.startswith("__") and base.endswith("__"):
        return None, None  # webdataset metadata members
    key, suffix = base_plus_ext(name)
    if key is None:
        return None, None
    return key, suffix.lower()


_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def is_compressed(path: str) -> bool:
    """Whether a local shard is a compressed tar (gzip, bzip2, xz): no random access then."""
    with open(path, "rb") as f:
        head = f.read(6)
    return any(head.startswith(magic) for magic in _COMPRESSED_MAGIC)


@dataclass(frozen=True)
class ShardLayout:
    """Where every member of every sample of one shard lies (for random access)."""

    keys: list[str]
    starts: np.ndarray  # int64[nsamples + 1]: member range of each sample
    suffixes: list[str]
    offsets: np.ndarray  # int64[members]: byte offset of each member's data
    sizes: np.ndarray  # int64[members]
    compressed: bool = False  # offsets then refer to the decompressed stream

    @property
    def nsamples(self) -> int:
        return len(self.keys)

    def members(self, pos: int) -> list[tuple[str, int, int]]:
        lo, hi = int(self.starts[pos]), int(self.starts[pos + 1])
        return [(self.suffixes[i], int(self.offsets[i]), int(self.sizes[i])) for i in range(lo, hi)]


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff compression)."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return data if n < 0 or len(data) == n else data + self.rest.read(n - len(data))
        return self.rest.read(n)

    def close(self) -> None:
        self.rest.close()


_DECOMPRESSORS = ((b"\x1f\x8b", gzip.GzipFile), (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))


def _open_tar(url: str) -> tuple[TarReader, Any]:
    """A header reader over the shard (decompressing .tgz & co.) and the handle to close."""
    path = local_path(url)
    try:
        if path is not None:
            if not os.path.exists(path):
                raise ShardError(url, "shard file does not exist")
            raw: Any = open(path, "rb")
            head = raw.read(6)
            raw.seek(0)
            seekable = True
        else:
            stream = gopen(url, "rb")
            head = stream.read(6)
            raw, seekable = _Prefixed(head, stream), False
    except ShardError:
        raise
    except OSError as exn:
        raise ShardError(url, f"cannot open shard ({exn})") from exn
    for magic, opener in _DECOMPRESSORS:
        if head.startswith(magic):
            return TarReader(opener(fileobj=raw), seekable=False), raw
    return TarReader(raw, seekable=seekable), raw


def _members(reader: TarReader, url: str) -> Iterator[Member]:
    """Regular members, turning format errors into ShardErrors that name the shard."""
    it = iter(reader)
    while True:
        try:
            member = next(it)
        except StopIteration:
            return
        except (TarFormatError, EOFError, OSError, zlib.error, lzma.LZMAError) as exn:
            raise ShardError(url, f"not a tar file or corrupt/truncated tar ({exn})") from exn
        yield member


def scan_layout(url: str) -> ShardLayout:
    """Read tar headers only (data is skipped, never decoded) and return the shard's layout."""
    reader, handle = _open_tar(url)
    keys: list[str] = []
    starts: list[int] = []
    suffixes: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    try:
        current = None
        for member in _members(reader, url):
            key, suffix = _split(member.name)
            if key is None:
                continue
            if key != current:
                current = key
                keys.append(key)
                starts.append(len(suffixes))
            suffixes.append(suffix)
            offsets.append(member.offset)
            sizes.append(member.size)
        path = local_path(url)
        compressed = path is not None and is_compressed(path)
        if path is not None and sizes and not compressed:
            end = offsets[-1] + sizes[-1]
            if end > os.path.getsize(path):
                raise ShardError(url, f"truncated tar: member data ends at byte {end}, file has {os.path.getsize(path)}")
    finally:
        handle.close()
    starts.append(len(suffixes))
    return ShardLayout(keys, np.asarray(starts, np.int64), suffixes, np.asarray(offsets, np.int64), np.asarray(sizes, np.int64), compressed)


@dataclass
class IOCounter:
    """Member reads and data bytes read (headers not counted)."""

    members: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.members += 1
        self.bytes += size


def stream_samples(url: str, wanted: Callable[[int], bool], io: IOCounter | None = None) -> Iterator[dict]:
    """Stream the raw samples of one shard in order, reading member data only for positions
    where ``wanted(pos)`` is true. Each sample is ``{"__key__", "__url__", "__pos__", suffix: bytes}``.

    Raises ShardError for a shard that is missing, not a tar, truncated, or holds a
    duplicate member.
    """
    reader, handle = _open_tar(url)
    try:
        current_key: str | None = None
        sample: dict | None = None
        pos = -1
        for member in _members(reader, url):
            key, suffix = _split(member.name)
            if key is None:
                continue
            if key != current_key:
                if sample is not None:
                    yield sample
                current_key, pos = key, pos + 1
                sample = {"__key__": key, "__url__": url, "__pos__": pos} if wanted(pos) else None
            if sample is None:
                continue
            if suffix in sample:
                raise ShardError(url, f"duplicate member {member.name!r}", key=key)
            try:
                data = reader.read()
            except (TarFormatError, EOFError, OSError, zlib.error, lzma.LZMAError) as exn:
                raise ShardError(url, f"truncated or corrupt member {member.name!r} ({exn})", key=key) from exn
            sample[suffix] = data
            if io is not None:
                io.add(len(data))
        if sample is not None:
            yield sample
    finally:
        handle.close()


class MemberReader:
    """Random access to members of local shards by byte offset; counts bytes it reads."""

    def __init__(self, io: IOCounter | None = None) -> None:
        self._files: dict[str, object] = {}
        self.io = io if io is not None else IOCounter()

    def read(self, url: str, layout: ShardLayout, pos: int) -> dict:
        path = local_path(url)
        if path is None:
            raise ShardError(url, "indexed mode needs local shard files (use mode='stream' for remote URLs)")
        if layout.compressed:
            raise ShardError(url, "indexed mode needs uncompressed tar shards (use mode='stream' for .tgz)")
        handle = self._files.get(path)
        if handle is None:
            try:
                handle = self._files[path] = open(path, "rb")
            except OSError as exn:
                raise ShardError(url, f"cannot open shard ({exn})") from exn
        sample: dict = {"__key__": layout.keys[pos], "__url__": url, "__pos__": pos}
        for suffix, offset, size in layout.members(pos):
            handle.seek(offset)
            data = handle.read(size)
            if len(data) != size:
                raise ShardError(url, f"truncated member .{suffix}: {len(data)} of {size} bytes", key=layout.keys[pos])
            sample[suffix] = data
            self.io.add(size)
        return sample

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
