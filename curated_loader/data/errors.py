"""Errors raised for bad shards, and the counted skip policy."""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Literal

OnError = Literal["raise", "skip"]

log = logging.getLogger("curated_loader")


class ShardError(RuntimeError):
    """A shard (or a sample in it) could not be read as promised.

    The message always names the shard URL and, where known, the sample key.
    """

    def __init__(self, url: str, problem: str, key: str | None = None) -> None:
        self.url = url
        self.key = key
        self.problem = problem
        where = f"{url}" if key is None else f"{url} (sample {key!r})"
        super().__init__(f"{where}: {problem}")


class UnsafeURLError(ShardError):
    """A shard URL read from a file would run a command (``pipe:``) and was not allowed to."""


class SkipKind(IntEnum):
    """Why samples were skipped under ``on_error="skip"``; each counts samples, per epoch."""

    SHARD = 0  # samples of a shard that could not be opened or was not a tar file
    SAMPLE = 1  # a sample that could not be read or decoded, or lacked a field
    MISSING = 2  # samples the index promised that a truncated/short shard did not hold


def check_on_error(on_error: str) -> OnError:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error  # type: ignore[return-value]
