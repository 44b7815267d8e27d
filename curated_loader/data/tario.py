"""Tar reading: header scans (for the index and member offsets) and sample streams.

Samples are grouped the webdataset way: consecutive members sharing the path up to the
first dot of the basename form one sample. The n-th such group of a shard is its sample at
position n, which is what gives every sample a stable id.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

from .errors import ShardError


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


def _open_tar(url: str) -> tuple[tarfile.TarFile, object]:
    path = local_path(url)
    try:
        if path is not None:
            if not os.path.exists(path):
                raise ShardError(url, "shard file does not exist")
            stream = open(path, "rb")
            return tarfile.open(fileobj=stream, mode="r:*"), stream
        stream = gopen(url, "rb")
        return tarfile.open(fileobj=stream, mode="r|*"), stream
    except ShardError:
        raise
    except tarfile.TarError as exn:
        raise ShardError(url, f"not a tar file ({exn})") from exn
    except OSError as exn:
        raise ShardError(url, f"cannot open shard ({exn})") from exn


def _members(tf: tarfile.TarFile, url: str) -> Iterator[tarfile.TarInfo]:
    """Regular members, turning tarfile's errors into ShardErrors that name the shard."""
    it = iter(tf)
    while True:
        try:
            info = next(it)
        except StopIteration:
            return
        except (tarfile.TarError, EOFError, OSError) as exn:
            raise ShardError(url, f"truncated or corrupt tar ({exn})") from exn
        tf.members = []  # keep memory flat on long shards
        if info.isreg():
            yield info


def scan_layout(url: str) -> ShardLayout:
    """Read tar headers only (data is skipped, never decoded) and return the shard's layout."""
    tf, stream = _open_tar(url)
    keys: list[str] = []
    starts: list[int] = []
    suffixes: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    try:
        current = None
        for info in _members(tf, url):
            key, suffix = _split(info.name)
            if key is None:
                continue
            if key != current:
                current = key
                keys.append(key)
                starts.append(len(suffixes))
            suffixes.append(suffix)
            offsets.append(info.offset_data)
            sizes.append(info.size)
        path = local_path(url)
        compressed = path is not None and is_compressed(path)
        if path is not None and sizes and not compressed:
            end = offsets[-1] + sizes[-1]
            if end > os.path.getsize(path):
                raise ShardError(url, f"truncated tar: member data ends at byte {end}, file has {os.path.getsize(path)}")
    finally:
        tf.close()
        stream.close()
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
    tf, stream = _open_tar(url)
    try:
        current_key: str | None = None
        sample: dict | None = None
        pos = -1
        for info in _members(tf, url):
            key, suffix = _split(info.name)
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
                raise ShardError(url, f"duplicate member {info.name!r}", key=key)
            try:
                member = tf.extractfile(info)
                data = member.read() if member is not None else b""
            except (tarfile.TarError, EOFError, OSError) as exn:
                raise ShardError(url, f"truncated or corrupt member {info.name!r} ({exn})", key=key) from exn
            if len(data) != info.size:
                raise ShardError(url, f"truncated member {info.name!r}: {len(data)} of {info.size} bytes", key=key)
            sample[suffix] = data
            if io is not None:
                io.add(len(data))
        if sample is not None:
            yield sample
    finally:
        tf.close()
        stream.close()


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
