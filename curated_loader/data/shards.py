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
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import braceexpand
import numpy as np
from tqdm.auto import tqdm

from .errors import OnError, ShardError, UnsafeURLError, check_on_error, log
from .fingerprint import ShardFingerprint, changes, fingerprint_shard
from .tario import ShardLayout, is_pipe, local_path, scan_layout
from .tarscan import DEFAULT_MAX_MEMBER_BYTES

INDEX_KIND = "wids-shard-index-v1"
ALLOW_PIPE_ENV = "CURATED_LOADER_ALLOW_PIPE"
CACHE_ENV = "CURATED_LOADER_CACHE"
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
    skipped: list[tuple[str, str]] = field(default_factory=list, compare=False)  # (url, why) left out under on_error="skip"
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
    def from_json(cls, data: dict, base: str | None = None, *, source: str | None = None, allow_pipe: bool | None = None) -> ShardIndex:
        """Read a wids shard index; relative local urls resolve against ``base``.

        ``pipe:`` urls (shell commands) are refused unless ``allow_pipe`` (default: the
        ``CURATED_LOADER_ALLOW_PIPE`` environment variable) — an index file is data, and
        reading data must not run commands. ``source`` names the file in errors.
        """
        if data.get("__kind__") != INDEX_KIND:
            raise ValueError(f"not a shard index (expected __kind__ {INDEX_KIND!r})")
        urls, counts, sizes, fps = [], [], [], []
        for entry in data["shardlist"]:
            url = entry["url"]
            if is_pipe(url) and not pipe_allowed(allow_pipe):
                where = f"the index {source}" if source else "a shard index"
                raise UnsafeURLError(
                    url, f"{where} lists a pipe: URL, which would run as a shell command; an index file is never "
                    f"trusted to run commands unless you opt in with allow_pipe=True, --allow-pipe or {ALLOW_PIPE_ENV}=1",
                )
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


def pipe_allowed(allow_pipe: bool | None = None) -> bool:
    """``allow_pipe`` if given, else whether ``CURATED_LOADER_ALLOW_PIPE`` is set to 1/true/yes."""
    if allow_pipe is not None:
        return bool(allow_pipe)
    return os.environ.get(ALLOW_PIPE_ENV, "").strip().lower() in ("1", "true", "yes")


def build_index(
    urls: Sequence[str],
    progress: bool = True,
    *,
    on_error: OnError = "raise",
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
) -> ShardIndex:
    """Scan tar headers of every shard (never decoding) and count its samples.

    A shard that cannot be read raises a ShardError naming it; with ``on_error="skip"`` it
    is left out of the index, logged, and listed in ``index.skipped``. A shard without
    samples (e.g. a zero-byte file) is kept and logged as a warning.
    """
    on_error = check_on_error(on_error)
    good, counts, sizes, fps, skipped = [], [], [], [], []
    for url in tqdm(urls, desc="indexing shards", unit="shard", disable=not progress):
        try:
            fp = fingerprint_shard(url, scan_layout(url, max_member_bytes))
        except ShardError as error:
            if on_error == "raise":
                raise
            skipped.append((url, error.problem))
            log.warning("index: skipping shard (on_error='skip'): %s", error)
            continue
        if fp.nsamples == 0:
            log.warning("index: shard %s holds no samples%s", url, " (zero-byte file)" if fp.size == 0 else "")
        good.append(url)
        counts.append(fp.nsamples)
        sizes.append(fp.size)
        fps.append(fp)
    if skipped:
        log.warning("index: skipped %d of %d shards under on_error='skip'; %d shards remain", len(skipped), len(urls), len(good))
    return ShardIndex(good, np.asarray(counts, np.int64), sizes, fps, skipped)


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where index caches go: ``cache_dir``, else ``$CURATED_LOADER_CACHE``, else
    ``$XDG_CACHE_HOME/curated_loader`` (default ``~/.cache/curated_loader``)."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "curated_loader"


def _moved(fp: ShardFingerprint | None, url: str) -> ShardFingerprint | None:
    """``fp`` under another spelling of its url (cache entries are keyed by absolute paths)."""
    return None if fp is None else ShardFingerprint(url, fp.nsamples, fp.size, fp.mtime_ns, fp.members)


def _canonical(url: str) -> str:
    """Local shards by absolute path (so relative specs find their cache), others as given."""
    path = local_path(url)
    return os.path.abspath(path) if path is not None else url


def _cache_path(canonical: Sequence[str], cache_dir: str | os.PathLike | None) -> Path:
    digest = hashlib.sha1("\n".join(canonical).encode()).hexdigest()[:16]
    return cache_folder(cache_dir) / f"index-{digest}.json"


def _read_cache(cache: Path, canonical: list[str], urls: list[str]) -> ShardIndex | None:
    """The cached index for ``urls`` if the cache holds them and no shard changed since."""
    try:
        with open(cache) as f:
            cached = ShardIndex.from_json(json.load(f), allow_pipe=True)  # urls are compared to the user's own
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None  # unreadable cache: rebuild it
    if cached.urls != canonical:
        return None
    index = ShardIndex(list(urls), cached.counts, cached.filesizes, [_moved(fp, url) for fp, url in zip(cached.fingerprints, urls)])
    return None if index.stale_shards() else index


def _write_cache(cache: Path, canonical: list[str], index: ShardIndex) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{socket.gethostname()}.{os.getpid()}.tmp")  # nodes may share the folder
        entries = [_moved(fp, url) for fp, url in zip(index.fingerprints, canonical)]
        tmp.write_text(json.dumps(ShardIndex(canonical, index.counts, index.filesizes, entries).to_json(), indent=1))
        os.replace(tmp, cache)
    except OSError as exn:
        log.info("index cache %s not written (%s)", cache, exn)


def read_index_file(path: str | os.PathLike, allow_pipe: bool | None = None) -> ShardIndex:
    """A wids index JSON as written (urls resolved against its folder, ``pipe:`` checked)."""
    path = os.fspath(path)
    with open(path) as f:
        return ShardIndex.from_json(json.load(f), base=os.path.dirname(os.path.abspath(path)), source=path, allow_pipe=allow_pipe)


def load_index(
    shards: ShardSpec | ShardIndex,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    *,
    allow_pipe: bool | None = None,
    on_error: OnError = "raise",
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
) -> ShardIndex:
    """The index for a shard spec: an index JSON, or shards scanned once and cached.

    ``pipe:`` urls listed in an index JSON need ``allow_pipe=True`` (or
    ``CURATED_LOADER_ALLOW_PIPE=1``); specs the caller gives directly (patterns, lists) may
    use them freely. Scanned indexes are cached in :func:`cache_folder` (never beside the
    shards), keyed by the shards' absolute paths, and rebuilt when a local shard's size has
    changed. ``on_error="skip"`` leaves unreadable shards out (see :func:`build_index`);
    such an index is not cached. A spec without any sample raises a ShardError naming it.
    """
    if isinstance(shards, ShardIndex):
        return shards
    if isinstance(shards, (str, os.PathLike)) and os.fspath(shards).endswith(".json"):
        path = os.fspath(shards)
        index = read_index_file(path, allow_pipe)
        stale = index.stale_reasons()
        if stale:
            url, reason = stale[0]
            raise ShardError(url, f"the shard {reason} since the index {path} was written: rebuild the index "
                                  f"(curated-loader index <shards> -o {path})")
        return _nonempty(index, path)
    urls = expand_urls(shards)
    canonical = [_canonical(u) for u in urls]
    cache = _cache_path(canonical, cache_dir)
    index = _read_cache(cache, canonical, urls)
    if index is None:
        index = build_index(urls, progress=progress, on_error=on_error, max_member_bytes=max_member_bytes)
        if not index.skipped:
            _write_cache(cache, canonical, index)
    return _nonempty(index, shards)


def _nonempty(index: ShardIndex, spec: object) -> ShardIndex:
    if index.num_samples == 0:
        spec_text = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else ", ".join(map(str, spec))  # type: ignore[call-overload]
        skipped = f", {len(index.skipped)} skipped as unreadable" if index.skipped else ""
        raise ShardError(spec_text, f"no samples in any shard ({index.num_shards} shards without samples{skipped})")
    return index
