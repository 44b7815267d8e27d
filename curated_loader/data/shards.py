"""Shard lists and the shard index: samples per shard, global id ranges, cached on disk.

The index uses wids' shard-index format so other tools can read it::

    {"__kind__": "wids-shard-index-v1", "wids_version": 1,
     "shardlist": [{"url": ..., "nsamples": ..., "filesize": ...}, ...]}

Sample ``i`` of shard ``s`` has the global id ``offsets[s] + i``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import braceexpand
import numpy as np
from tqdm.auto import tqdm

from .errors import ShardError
from .tario import ShardLayout, local_path, scan_layout

INDEX_KIND = "wids-shard-index-v1"
_GLOB_CHARS = set("*?[")

ShardSpec = str | os.PathLike | Sequence[str | os.PathLike]


def expand_urls(spec: ShardSpec) -> list[str]:
    """Expand a brace pattern, a glob, a list of either, or URLs into a flat list of URLs.

    An index JSON (a path ending in ``.json``) is not expanded here: see :func:`load_index`.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    urls: list[str] = []
    for item in items:
        for url in braceexpand.braceexpand(os.fspath(item)):
            if local_path(url) is not None and _GLOB_CHARS & set(url):
                matches = sorted(glob.glob(local_path(url)))
                if not matches:
                    raise FileNotFoundError(f"shard pattern {url!r} matches no file")
                urls.extend(matches)
            else:
                urls.append(url)
    if not urls:
        raise ValueError(f"no shards in {spec!r}")
    return urls


def _filesize(url: str) -> int | None:
    path = local_path(url)
    if path is None:
        return None
    try:
        return os.path.getsize(path)
    except OSError:
        return None


@dataclass
class ShardIndex:
    """Shard URLs, their sample counts and the global id range of each shard."""

    urls: list[str]
    counts: np.ndarray  # int64[shards]
    filesizes: list[int | None] = field(default_factory=list)
    _layouts: dict[int, ShardLayout] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if len(self.urls) != len(self.counts):
            raise ValueError("urls and counts differ in length")
        if not self.filesizes:
            self.filesizes = [None] * len(self.urls)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    @property
    def num_shards(self) -> int:
        return len(self.urls)

    @property
    def num_samples(self) -> int:
        return int(self.offsets[-1])

    def id_range(self, shard: int) -> range:
        return range(int(self.offsets[shard]), int(self.offsets[shard + 1]))

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, position in shard) of each global id."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise IndexError(f"sample ids must lie in [0, {self.num_samples})")
        shard = np.searchsorted(self.offsets, ids, side="right") - 1
        return shard, ids - self.offsets[shard]

    def layout(self, shard: int) -> ShardLayout:
        """Member offsets of one shard (scanned on first use, then kept)."""
        layout = self._layouts.get(shard)
        if layout is None:
            layout = scan_layout(self.urls[shard])
            if layout.nsamples != self.counts[shard]:
                raise ShardError(
                    self.urls[shard],
                    f"index says {self.counts[shard]} samples, shard holds {layout.nsamples}: rebuild the index",
                )
            self._layouts[shard] = layout
        return layout

    # -- persistence -------------------------------------------------------------------
    def to_json(self, relative_to: str | None = None) -> dict:
        """The wids shard-index document; local urls under ``relative_to`` are written relative."""
        shardlist = []
        for url, n, size in zip(self.urls, self.counts, self.filesizes):
            path = local_path(url)
            if relative_to is not None and path is not None and os.path.abspath(path).startswith(relative_to + os.sep):
                url = os.path.relpath(os.path.abspath(path), relative_to)
            entry = {"url": url, "nsamples": int(n)}
            if size is not None:
                entry["filesize"] = int(size)
            shardlist.append(entry)
        return {"__kind__": INDEX_KIND, "wids_version": 1, "shardlist": shardlist}

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(relative_to=str(path.parent.resolve())), indent=1))
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, data: dict, base: str | None = None) -> ShardIndex:
        if data.get("__kind__") != INDEX_KIND:
            raise ValueError(f"not a shard index (expected __kind__ {INDEX_KIND!r})")
        urls, counts, sizes = [], [], []
        for entry in data["shardlist"]:
            url = entry["url"]
            if base is not None and local_path(url) is not None and not os.path.isabs(local_path(url)):
                url = os.path.join(base, url)  # wids resolves relative urls against the index
            urls.append(url)
            counts.append(int(entry["nsamples"]))
            sizes.append(entry.get("filesize"))
        return cls(urls, np.asarray(counts, np.int64), sizes)

    def stale_shards(self) -> list[str]:
        """Local shards whose current size differs from the size recorded in the index."""
        return [
            url
            for url, size in zip(self.urls, self.filesizes)
            if size is not None and _filesize(url) is not None and _filesize(url) != size
        ]


def build_index(urls: Sequence[str], progress: bool = True) -> ShardIndex:
    """Scan tar headers of every shard (never decoding) and count its samples."""
    counts, sizes = [], []
    for url in tqdm(urls, desc="indexing shards", unit="shard", disable=not progress):
        counts.append(scan_layout(url).nsamples)
        sizes.append(_filesize(url))
    return ShardIndex(list(urls), np.asarray(counts, np.int64), sizes)


def _cache_path(urls: Sequence[str], cache_dir: str | os.PathLike | None) -> Path:
    digest = hashlib.sha1("\n".join(urls).encode()).hexdigest()[:16]
    name = f".curated-index-{digest}.json"
    if cache_dir is None:
        paths = [local_path(u) for u in urls]
        if all(p is not None for p in paths):
            folder = os.path.dirname(os.path.abspath(paths[0]))
            if os.access(folder, os.W_OK):
                return Path(folder) / name
        cache_dir = os.environ.get("CURATED_LOADER_CACHE", Path.home() / ".cache" / "curated_loader")
    return Path(cache_dir) / name


def load_index(
    shards: ShardSpec | ShardIndex,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> ShardIndex:
    """The index for a shard spec: an index JSON, or shards scanned once and cached.

    The cache lives beside local shards (``.curated-index-<hash>.json``) or in ``cache_dir``
    (default ``$CURATED_LOADER_CACHE`` or ``~/.cache/curated_loader``); it is rebuilt when a
    local shard's size has changed.
    """
    if isinstance(shards, ShardIndex):
        return shards
    if isinstance(shards, (str, os.PathLike)) and os.fspath(shards).endswith(".json"):
        path = os.fspath(shards)
        with open(path) as f:
            index = ShardIndex.from_json(json.load(f), base=os.path.dirname(os.path.abspath(path)))
        stale = index.stale_shards()
        if stale:
            raise ShardError(stale[0], f"shard changed since the index {path} was written: rebuild it")
        return index
    urls = expand_urls(shards)
    cache = _cache_path(urls, cache_dir)
    if cache.exists():
        try:
            with open(cache) as f:
                index = ShardIndex.from_json(json.load(f), base=str(cache.parent.resolve()))
            if index.urls == urls and not index.stale_shards():
                return index
        except (ValueError, KeyError, json.JSONDecodeError):
            pass  # unreadable cache: rebuild it
    index = build_index(urls, progress=progress)
    try:
        index.save(cache)
    except OSError:
        pass  # read-only location: the index simply is not cached
    return index
