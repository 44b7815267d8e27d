"""Shard lists and the shard index: samples per shard, global id ranges, cached on disk.

The index uses wids' shard-index format so other tools can read it::

    {"__kind__": "wids-shard-index-v1", "wids_version": 1,
     "shardlist": [{"url": ..., "nsamples": ..., "filesize": ...}, ...]}

Indexes written here add ``mtime_ns`` and ``members_sha1`` to each entry (the shard's
fingerprint, see :mod:`.fingerprint`); wids ignores them. Sample ``i`` of shard ``s`` has the
global id ``offsets[s] + i``.
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
from .fingerprint import ShardFingerprint, changes, fingerprint_shard
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


@dataclass
class ShardIndex:
    """Shard URLs, their sample counts and the global id range of each shard."""

    urls: list[str]
    counts: np.ndarray  # int64[shards]
    filesizes: list[int | None] = field(default_factory=list)
    fingerprints: list[ShardFingerprint | None] = field(default_factory=list)
    _layouts: dict[int, ShardLayout] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if len(self.urls) != len(self.counts):
            raise ValueError("urls and counts differ in length")
        if not self.filesizes:
            self.filesizes = [None] * len(self.urls)
        if not self.fingerprints:
            self.fingerprints = [None] * len(self.urls)
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
        for url, n, size, fp in zip(self.urls, self.counts, self.filesizes, self.fingerprints):
            path = local_path(url)
            if relative_to is not None and path is not None and os.path.abspath(path).startswith(relative_to + os.sep):
                url = os.path.relpath(os.path.abspath(path), relative_to)
            entry = {"url": url, "nsamples": int(n)}
            if size is not None:
                entry["filesize"] = int(size)
            if fp is not None:
                entry.update(mtime_ns=fp.mtime_ns, members_sha1=fp.members)
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
        urls, counts, sizes, fps = [], [], [], []
        for entry in data["shardlist"]:
            url = entry["url"]
            if base is not None and local_path(url) is not None and not os.path.isabs(local_path(url)):
                url = os.path.join(base, url)  # wids resolves relative urls against the index
            urls.append(url)
            counts.append(int(entry["nsamples"]))
            sizes.append(entry.get("filesize"))
            known = entry.get("mtime_ns") is not None or entry.get("members_sha1") is not None
            fps.append(ShardFingerprint(url, counts[-1], sizes[-1], entry.get("mtime_ns"), entry.get("members_sha1"))
                       if known else None)
        return cls(urls, np.asarray(counts, np.int64), sizes, fps)

    def fingerprint(self, shard: int) -> ShardFingerprint:
        """Shard ``shard``'s fingerprint as the index recorded it (url, count and size at least)."""
        fp = self.fingerprints[shard]
        if fp is not None:
            return fp
        return ShardFingerprint(self.urls[shard], int(self.counts[shard]), self.filesizes[shard])

    def stale_reasons(self) -> list[tuple[str, str]]:
        """``(url, what changed)`` of every local shard that is missing or whose size or
        modification time differs from the index's record of it."""
        found = ((url, changes(self.fingerprint(s))) for s, url in enumerate(self.urls))
        return [(url, reason) for url, reason in found if reason is not None]

    def stale_shards(self) -> list[str]:
        """Local shards that are missing or changed since the index was written."""
        return [url for url, _ in self.stale_reasons()]


def build_index(urls: Sequence[str], progress: bool = True) -> ShardIndex:
    """Scan tar headers of every shard (never decoding) and count its samples."""
    counts, sizes, fps = [], [], []
    for url in tqdm(urls, desc="indexing shards", unit="shard", disable=not progress):
        fp = fingerprint_shard(url)
        counts.append(fp.nsamples)
        sizes.append(fp.size)
        fps.append(fp)
    return ShardIndex(list(urls), np.asarray(counts, np.int64), sizes, fps)


def default_cache_dir() -> Path:
    """Where index caches go when no folder is given: ``$CURATED_LOADER_CACHE``, else
    ``$XDG_CACHE_HOME/curated_loader``, else ``~/.cache/curated_loader``."""
    if os.environ.get("CURATED_LOADER_CACHE"):
        return Path(os.environ["CURATED_LOADER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "curated_loader"


def _cache_path(urls: Sequence[str], cache_dir: str | os.PathLike | None) -> Path:
    digest = hashlib.sha1("\n".join(urls).encode()).hexdigest()[:16]
    name = f".curated-index-{digest}.json"
    if cache_dir is None:
        paths = [local_path(u) for u in urls]
        if all(p is not None for p in paths):
            folder = os.path.dirname(os.path.abspath(paths[0]))
            if os.access(folder, os.W_OK):
                return Path(folder) / name
        cache_dir = default_cache_dir()
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
        stale = index.stale_reasons()
        if stale:
            url, reason = stale[0]
            raise ShardError(url, f"the shard {reason} since the index {path} was written: rebuild the index "
                                  f"(curated-loader index <shards> -o {path})")
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
