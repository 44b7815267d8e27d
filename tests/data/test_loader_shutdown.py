"""An epoch ended by a worker's error stops its loader workers at once.

The abandoned DataLoader iterator used to be freed by the garbage collector (the error's
traceback keeps it alive), after its index queues were closed, so the workers never got
their final message: torch then waited 5 s per worker before killing them.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from curated_loader.data.errors import ShardError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.shards import load_index

SIZES = [12, 12, 12, 12]
PROMPT_S = 3.0  # torch's fallback took 5 s per worker, 10 s for two

pytestmark = pytest.mark.timeout(120)


def _read_until_error(loader: CuratedLoader) -> tuple[list, list[multiprocessing.Process]]:
    """Iterate until the loader raises; returns the batches and the worker processes."""
    before = set(multiprocessing.active_children())
    batches, workers = [], []
    with pytest.raises(ShardError, match="does not exist"):
        for batch in loader:
            batches.append(batch)
            if not workers:
                workers = [p for p in multiprocessing.active_children() if p not in before]
    return batches, workers


def _release_time(workers: list[multiprocessing.Process]) -> float:
    """Seconds until the workers are gone once nothing refers to the failed epoch."""
    started = time.monotonic()
    gc.collect()  # frees the iterator the error's traceback kept (a reference cycle)
    for w in workers:
        w.join(timeout=30)
    return time.monotonic() - started


@pytest.mark.parametrize("persistent", [False, True])
def test_an_epoch_ended_by_a_worker_error_frees_its_workers_at_once(make_shards, persistent):
    index = load_index(make_shards(SIZES))
    last = Path(index.urls[-1])  # worker 1's second shard: each worker delivers a batch first
    stream = CuratedStream(index, fields=("npy", "cls"), decode=(), batch_size=4, shuffle=False)
    loader = CuratedLoader(stream, num_workers=2, persistent_workers=persistent)
    os.rename(last, last.with_suffix(".away"))
    try:
        batches, workers = _read_until_error(loader)
    finally:
        os.rename(last.with_suffix(".away"), last)
    assert len(workers) == 2 and batches
    assert not any(w.is_alive() for w in workers), "workers still running after the error"
    assert _release_time(workers) < PROMPT_S
    assert all(w.exitcode == 0 for w in workers)  # they ended their loop, nobody killed them

    ids = sorted(i for batch in loader for i in batch[2].tolist())  # the next epoch starts new workers
    assert ids == list(range(sum(SIZES)))


def test_closing_an_epoch_early_stops_its_workers(make_shards):
    stream = CuratedStream(make_shards(SIZES), fields=("npy", "cls"), decode=(), batch_size=4, shuffle=False)
    loader = CuratedLoader(stream, num_workers=2)
    before = set(multiprocessing.active_children())
    batches = iter(loader)
    next(batches)
    workers = [p for p in multiprocessing.active_children() if p not in before]
    assert len(workers) == 2
    batches.close()
    assert not any(w.is_alive() for w in workers)
    assert all(w.exitcode == 0 for w in workers)
    with pytest.raises(StopIteration):
        next(batches)
    assert len(list(loader)) == len(loader)  # the next epoch runs in full
