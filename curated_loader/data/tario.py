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
from webdataset.tariterators import base_plus_ext

from .errors import ShardError
from .remote import open_remote
from .tarscan import DEFAULT_MAX_MEMBER_BYTES, Member, TarFormatError, TarReader


def is_pipe(url: str) -> bool:
    """Whether ``url`` is a ``pipe:`` URL, i.e. a shell command webdataset's gopen would run.

    Parsed as gopen parses it (``" PIPE:cmd"`` counts too).
    """
    return urlparse(url).scheme == "pipe" or url.startswith("pipe:")


def local_path(url: str) -> str | None:
    """The filesystem path behind ``url`` if it names a local file, else None."""
    if url.startswith("file:"):
        return urlparse(url).path if url.startswith("file://") else url[len("file:") :]
    if "://" in url or is_pipe(url):
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


def _open_tar(url: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> tuple[TarReader, Any]:
    """A header reader over the shard (decompressing .tgz & co.) and the handle to close."""
    path = local_path(url)
    size: int | None = None
    try:
        if path is not None:
            if not os.path.exists(path):
                raise ShardError(url, "shard file does not exist")
            raw: Any = open(path, "rb")
            size = os.fstat(raw.fileno()).st_size
            head = raw.read(6)
            raw.seek(0)
            seekable = True
        else:
            stream = open_remote(url)
            head = stream.read(6)
            raw, seekable = _Prefixed(head, stream), False
    except ShardError:
        raise
    except OSError as exn:
        raise ShardError(url, f"cannot open shard ({exn})") from exn
    for magic, opener in _DECOMPRESSORS:
        if head.startswith(magic):
            return TarReader(opener(fileobj=raw), seekable=False, max_member_bytes=max_member_bytes), raw
    return TarReader(raw, seekable=seekable, total_size=size, max_member_bytes=max_member_bytes), raw


_READ_ERRORS = (TarFormatError, EOFError, OSError, zlib.error, lzma.LZMAError)


def _members(reader: TarReader, url: str) -> Iterator[Member]:
    """Regular members, turning format errors into ShardErrors that name the shard."""
    it = iter(reader)
    while True:
        try:
            member = next(it)
        except StopIteration:
            return
        except _READ_ERRORS as exn:
            raise ShardError(url, f"not a tar file or corrupt/truncated tar ({exn})") from exn
        yield member


def _fields(reader: TarReader, url: str) -> Iterator[tuple[str, str, Member, bool]]:
    """``(key, suffix, member, starts_sample)`` of each field member, in tar order.

    A sample is a run of adjacent members sharing a key. Raises ShardError when a key comes
    back after another sample (members of one sample not adjacent) or a suffix repeats.
    """
    seen: set[str] = set()
    current: str | None = None
    suffixes: set[str] = set()
    for member in _members(reader, url):
        key, suffix = _split(member.name)
        if key is None:
            continue
        starts = key != current
        if starts:
            if key in seen:
                raise ShardError(
                    url, f"members of sample {key!r} are not adjacent ({member.name!r} comes after other samples); "
                    "write the shard with each sample's members together, e.g. `tar --sort=name`", key=key,
                )
            seen.add(key)
            current, suffixes = key, set()
        if suffix in suffixes:
            raise ShardError(url, f"duplicate member {member.name!r}", key=key)
        suffixes.add(suffix)
        yield key, suffix, member, starts


def scan_layout(url: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> ShardLayout:
    """Read tar headers only (data is skipped, never decoded) and return the shard's layout."""
    reader, handle = _open_tar(url, max_member_bytes)
    keys: list[str] = []
    starts: list[int] = []
    suffixes: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    try:
        for key, suffix, member, new_sample in _fields(reader, url):
            if new_sample:
                keys.append(key)
                starts.append(len(suffixes))
            suffixes.append(suffix)
            offsets.append(member.offset)
            sizes.append(member.size)
        compressed = reader.total_size is None and local_path(url) is not None
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


def stream_samples(
    url: str, wanted: Callable[[int], bool], io: IOCounter | None = None, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
) -> Iterator[dict]:
    """Stream the raw samples of one shard in order, reading member data only for positions
    where ``wanted(pos)`` is true. Each sample is ``{"__key__", "__url__", "__pos__", suffix: bytes}``.

    Raises ShardError for a shard that is missing, not a tar, truncated, has a malformed
    header or a member over ``max_member_bytes`` (streams, compressed shards), holds a
    duplicate member, or whose samples' members are not adjacent.
    """
    reader, handle = _open_tar(url, max_member_bytes)
    try:
        sample: dict | None = None
        pos = -1
        for key, suffix, member, new_sample in _fields(reader, url):
            if new_sample:
                if sample is not None:
                    yield sample
                pos += 1
                sample = {"__key__": key, "__url__": url, "__pos__": pos} if wanted(pos) else None
            if sample is None:
                continue
            try:
                data = reader.read()
            except _READ_ERRORS as exn:
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
