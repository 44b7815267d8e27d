"""The epoch-end scope that keeps freed host memory for reuse (glibc only)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch

from curated_loader import host_memory

pytestmark = pytest.mark.skipif(not host_memory.available(), reason="needs glibc")

_BIG = 48 << 20  # above glibc's largest mmap threshold (32 MiB): mmapped by default


def _faults_of_second_array() -> int:
    """Minor page faults while filling a large array right after an equal one was freed."""
    first = torch.empty(_BIG, dtype=torch.uint8).fill_(1)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.empty(_BIG, dtype=torch.uint8).fill_(2)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


def _settle() -> None:
    """Grow the heap and let glibc's bins settle (the first rounds may land in fresh pages)."""
    for _ in range(3):
        _faults_of_second_array()


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_freed_arrays_are_reused_inside_the_scope_only() -> None:
    pages = _BIG // resource.getpagesize()
    assert _faults_of_second_array() > pages // 2  # outside: a fresh mapping, faulted in again
    with host_memory.reuse_freed_host_memory():
        _settle()
        assert _faults_of_second_array() < pages // 20  # the freed pages are reused
    assert _faults_of_second_array() > pages // 2  # settings restored on exit


def test_exit_returns_the_freed_pages() -> None:
    with host_memory.reuse_freed_host_memory():
        held = torch.empty(4 * _BIG, dtype=torch.uint8).fill_(1)
        inside = _rss_bytes()
        del held
    assert _rss_bytes() < inside - 2 * _BIG  # malloc_trim on exit


def test_nested_scopes_restore_on_the_outermost_exit_only() -> None:
    pages = _BIG // resource.getpagesize()
    with host_memory.reuse_freed_host_memory():
        with host_memory.reuse_freed_host_memory():
            _settle()
        assert _faults_of_second_array() < pages // 20  # still inside the outer scope
    assert _faults_of_second_array() > pages // 2


def test_decorated_function_keeps_its_name_and_result() -> None:
    @host_memory.reusing_freed_host_memory
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    assert double(21) == 42 and double.__name__ == "double" and double.__doc__ == "Twice x."
