"""Shard fingerprints: what a shard looked like when it was indexed or trained on.

A :class:`ShardFingerprint` holds a shard's URL, sample count, file size, modification time
(nanoseconds) and a SHA-1 digest of its member list — each member's name as the loader
groups it (``<key>.<suffix>``) and its size, in tar order. The digest is computed from the
tar headers only (the scan that counts samples), so it is cheap; it changes when samples
are added, removed, renamed, reordered or resized, not when member bytes are edited in
place — the modification time catches those.

Two uses:

* an index is *stale* when a local shard it lists is missing or its size or modification
  time differ from the fingerprint recorded in the index (:func:`changes`);
* a checkpoint records the fingerprints of its training shards, and ``report``/``export``
  compare them with the shards they are given (:func:`first_mismatch`): a different order or
  content is refused, naming the first shard that differs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from typing import Any

from .tario import ShardLayout, local_path, scan_layout


@dataclass(frozen=True)
class ShardFingerprint:
    """One shard's identity: ``url``, ``nsamples``, ``size`` and ``mtime_ns`` (local files
    only, else ``None``) and ``members`` (SHA-1 hex of the member list, ``None`` if unknown)."""

    url: str
    nsamples: int
    size: int | None = None
    mtime_ns: int | None = None
    members: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (safe for ``torch.load(weights_only=True)`` and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardFingerprint:
        return cls(str(data["url"]), int(data["nsamples"]), data.get("size"), data.get("mtime_ns"), data.get("members"))

    @property
    def name(self) -> str:
        """The shard's file name (the URL's last path component)."""
        return os.path.basename(self.url.rstrip("/"))


def file_stat(url: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a local shard, ``None`` for remote URLs or missing files."""
    path = local_path(url)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def members_digest(layout: ShardLayout) -> str:
    """SHA-1 hex of a shard's member list: ``<key>.<suffix>`` and size of every member, in order."""
    digest = hashlib.sha1()
    starts, sizes = layout.starts, layout.sizes
    for pos, key in enumerate(layout.keys):
        for i in range(int(starts[pos]), int(starts[pos + 1])):
            digest.update(f"{key}.{layout.suffixes[i]}\0{int(sizes[i])}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def fingerprint_shard(url: str, layout: ShardLayout | None = None) -> ShardFingerprint:
    """The fingerprint of ``url`` now (scans its tar headers unless ``layout`` is given)."""
    stat = file_stat(url)  # before the scan: a shard edited meanwhile then looks changed, never fresh
    layout = scan_layout(url) if layout is None else layout
    size, mtime = stat if stat is not None else (None, None)
    return ShardFingerprint(url, layout.nsamples, size, mtime, members_digest(layout))


def with_members(fingerprints: list[ShardFingerprint]) -> list[ShardFingerprint]:
    """``fingerprints`` with the member digest filled in (by a header scan) for local shards
    that lack one, e.g. from an index written by another tool."""
    return [fingerprint_shard(fp.url) if fp.members is None and local_path(fp.url) is not None else fp
            for fp in fingerprints]


def changes(recorded: ShardFingerprint) -> str | None:
    """How a local shard differs from ``recorded`` by ``stat`` alone, as a phrase that reads
    before "since ..." (missing, size, modification time), or ``None`` when it looks unchanged
    or cannot be checked (remote URLs)."""
    path = local_path(recorded.url)
    if path is None:
        return None
    stat = file_stat(recorded.url)
    if stat is None:
        return "was deleted or moved"
    size, mtime = stat
    if recorded.size is not None and size != recorded.size:
        return f"changed size from {recorded.size} to {size} bytes"
    if recorded.mtime_ns is not None and mtime != recorded.mtime_ns:
        return "was modified (same size: edited in place, or copied without keeping modification times)"
    return None


def first_mismatch(recorded: list[ShardFingerprint], given: list[ShardFingerprint]) -> str | None:
    """Where the ``given`` shard list departs from the ``recorded`` one, as a message naming the
    first shard that differs, or ``None`` when they match.

    Shards match position by position when their sample counts, file names and (where both
    sides know them) member digests agree, and sizes where no digest is known. File names
    count because shards written alike (keys restarting in every shard) have equal member
    lists: only the name tells them apart; a renamed copy is refused too."""
    given_names = [g.name for g in given]
    for i, (want, got) in enumerate(zip(recorded, given)):
        where = f"shard {i} ({got.url})"
        if got.nsamples != want.nsamples:
            return f"{where} holds {got.nsamples} samples; the run's shard {i} ({want.name}) held {want.nsamples}"
        if want.members is not None and got.members is not None and got.members != want.members:
            return f"{where} has other members (keys, order or sizes) than the run's shard {i} ({want.name})"
        if got.name != want.name:
            if want.name in given_names:
                return f"{where} stands where the run had {want.name}, which is given at position {given_names.index(want.name)}"
            return f"{where} is not the run's shard {i} ({want.name}): another file name"
        if (want.members is None or got.members is None) and None not in (got.size, want.size) and got.size != want.size:
            return f"{where} has {got.size} bytes; the run's shard {i} had {want.size}"
    if len(given) != len(recorded):
        extra = "more" if len(given) > len(recorded) else "fewer"
        return f"{len(given)} shards given, {extra} than the {len(recorded)} the run was trained on"
    return None


__all__ = ["ShardFingerprint", "changes", "file_stat", "fingerprint_shard", "first_mismatch", "members_digest",
           "with_members"]
