"""Reuse of freed host memory in the epoch-end phases (sync, plan, publish).

At 10⁸ samples those phases allocate and free arrays of hundreds of MB, one after the other.
glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and unmaps it when freed, so each temporary page-faults in zeroed pages again: at 10⁸ that was
more than half of the plan's time (docs/benchmarks.md, "Scale"). Inside
:func:`reuse_freed_host_memory` glibc serves large allocations from its heap instead and keeps
what is freed there for the next one; on the way out the freed pages go back to the kernel
(``malloc_trim``) and glibc's large-allocation settings are set to where its own dynamic rule
takes a process that frees large arrays (mmap threshold 32 MiB, trim threshold 64 MiB).

Elsewhere (not glibc, e.g. macOS, musl) the scope does nothing. Scopes nest and may be
entered from several threads; the settings change on the outermost entry and exit only.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_MMAP_MAX = 65536
#: Where glibc's dynamic rule leaves a process that has freed arrays above 32 MiB.
_SETTLED_MMAP_THRESHOLD = 32 << 20
_SETTLED_TRIM_THRESHOLD = 2 * _SETTLED_MMAP_THRESHOLD
#: Inside the scope: never trim the heap's top (the next large array reuses it).
_KEEP_TRIM_THRESHOLD = (1 << 31) - 1

_lock = threading.Lock()
_depth = 0

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def _glibc() -> Any:
    """glibc's ``mallopt``/``malloc_trim`` through ctypes, or ``None`` where the C library is another."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    malloc_trim.argtypes, malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return libc


def available() -> bool:
    """Whether the scope acts here (the process runs on glibc)."""
    return _glibc() is not None


def _set(libc: Any, settings: tuple[tuple[int, int], ...]) -> None:
    for param, value in settings:
        if not libc.mallopt(param, value):
            log.debug("mallopt(%d, %d) refused", param, value)


@contextmanager
def reuse_freed_host_memory() -> Iterator[None]:
    """While inside, large host allocations come from glibc's heap and freed ones stay there
    for reuse (no fresh page faults per temporary); on exit the freed pages are returned."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _set(libc, ((_M_TRIM_THRESHOLD, _KEEP_TRIM_THRESHOLD), (_M_MMAP_MAX, 0)))
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(libc, ((_M_MMAP_MAX, _DEFAULT_MMAP_MAX), (_M_MMAP_THRESHOLD, _SETTLED_MMAP_THRESHOLD),
                            (_M_TRIM_THRESHOLD, _SETTLED_TRIM_THRESHOLD)))
                libc.malloc_trim(0)


def reusing_freed_host_memory(function: F) -> F:
    """Decorator: run ``function`` inside :func:`reuse_freed_host_memory`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with reuse_freed_host_memory():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
