"""Resuming a loader without Lightning: the resumed epoch's length and batch order, and
errors from loader workers arriving as the ShardError they are."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest
import torch

from curated_loader import CuratedDataModule
from curated_loader.data.epoch import ResumeRole, resume_roles, round_robin_order
from curated_loader.data.errors import ShardError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.shards import ShardIndex, load_index

SIZES = [37, 5, 60, 12, 0, 41, 23, 8, 50, 19]  # unequal shards: workers hold unequal batch counts
N = sum(SIZES)

pytestmark = pytest.mark.timeout(180)


def pruned_stream(index_path: str, mode: str = "stream", **kw) -> CuratedStream:
    ds = CuratedStream(index_path, fields=("npy", "cls"), decode=(), batch_size=8, mode=mode, seed=1, **kw)
    keep = torch.from_numpy(np.random.default_rng(0).random(N) < 0.7)
    ds.snapshot.publish(keep, version=1)
    return ds


def ids_of(batches) -> list[list[int]]:
    return [b[2].tolist() for b in batches]


@pytest.mark.parametrize("seed", range(20))
def test_resume_roles_continue_the_round_robin(seed):
    """Dealing the workers that still have batches to slots in turn order makes a fresh
    round-robin (which starts at slot 0) yield exactly the rest of the original order."""
    rng = np.random.default_rng(seed)
    batches = rng.integers(0, 7, size=int(rng.integers(1, 5)))
    order = round_robin_order(batches)
    for consumed in range(len(order) + 1):
        roles = resume_roles(batches, consumed)
        left = np.array([0 if r is None else batches[r.worker] - r.done for r in roles])
        replay = [roles[slot].worker for slot in round_robin_order(left)]
        assert replay == order[consumed:].tolist()


def test_resume_roles_without_interruption_is_the_identity():
    assert resume_roles(np.array([3, 2, 2]), 0) == [ResumeRole(0, 0), ResumeRole(1, 0), ResumeRole(2, 0)]
    assert resume_roles(np.array([3, 2, 2]), 4) == [ResumeRole(1, 1), ResumeRole(2, 1), ResumeRole(0, 2)]
    assert resume_roles(np.array([3, 1]), 3) == [ResumeRole(0, 2), None]


@pytest.mark.parametrize("mode", ["stream", "indexed"])
@pytest.mark.parametrize("workers", [2, 3])
def test_resumed_epoch_yields_the_rest_in_the_original_order(make_shards, mode, workers):
    ds = pruned_stream(make_shards(SIZES), mode)
    loader = CuratedLoader(ds, num_workers=workers, persistent_workers=True)
    loader.set_epoch(2)
    full = ids_of(loader)
    assert len(full) == loader.epoch_batches > 4
    for consumed in sorted({1, 2, 3, len(full) // 2, len(full) - 2, len(full) - 1}):
        loader.resume(2, consumed)
        loader.set_epoch(2)
        assert ids_of(loader) == full[consumed:], f"after {consumed} batches"


@pytest.mark.parametrize("mode", ["stream", "indexed"])
def test_length_is_that_of_the_epoch_the_next_iterator_starts(make_shards, mode):
    """Lightning sizes an epoch with len(loader) before the iterator starts; a resumed run
    starts at a later epoch, whose plan (shards dealt to workers) differs from epoch 0's."""
    ds = pruned_stream(make_shards(SIZES), mode)
    loader = CuratedLoader(ds, num_workers=2)
    lengths = {}
    for epoch in range(8):
        loader.min_epoch = epoch
        lengths[epoch] = len(loader)
        assert lengths[epoch] == len(list(loader)) == loader.epoch_batches, f"epoch {epoch}"
        loader._next_epoch = 0  # the next iterator would start at epoch 0 but for min_epoch
    if mode == "stream":
        assert len(set(lengths.values())) > 1, "every epoch had one length: the check proves nothing"


def test_length_while_iterating_is_the_running_epochs(make_shards):
    loader = CuratedLoader(pruned_stream(make_shards(SIZES)), num_workers=2)
    batches = iter(loader)
    next(batches)
    assert len(loader) == loader.epoch_batches == 1 + len(list(batches))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_worker_shard_error_is_raised_as_itself(make_shards, workers):
    index = load_index(make_shards([10, 10]))
    gone = index.urls[1] + ".gone"
    broken = ShardIndex([index.urls[0], gone], index.counts)
    loader = CuratedLoader(CuratedStream(broken, fields=("npy", "cls"), decode=(), batch_size=4, shuffle=False), num_workers=workers)
    with pytest.raises(ShardError) as caught:
        list(loader)
    assert type(caught.value) is ShardError
    assert caught.value.url == gone and "does not exist" in caught.value.problem
    assert "Caught ShardError" not in str(caught.value)
    if workers:
        assert "in DataLoader worker" in str(caught.value.__cause__) and "Traceback" in str(caught.value.__cause__)


def test_mid_epoch_checkpoint_refuses_another_worker_count(make_shards):
    dm = CuratedDataModule(make_shards(SIZES), fields=("npy", "cls"), decode=(), num_workers=1)
    state = {"seed": 0, "epoch": 1, "batches_done": 3, "epoch_complete": False, "num_workers": 2}
    with pytest.raises(ValueError, match=r"num_workers=2.*num_workers=1"):
        dm.load_state_dict(state)
    dm.load_state_dict(dict(state, epoch_complete=True))  # an epoch end resumes with any count
    assert dm._resume == (2, 0)


_stalled = False  # per worker process


def _stall(sample: dict) -> dict:
    """Stall each worker once, far longer than the timeout, then let it run on."""
    global _stalled
    if not _stalled:
        _stalled = True
        time.sleep(3)
    return sample


def test_worker_timeout_turns_a_stalled_worker_into_an_error(make_shards):
    dm = CuratedDataModule(make_shards([8, 8]), fields=("npy", "cls"), decode=(), num_workers=2, transform=_stall, worker_timeout=1)
    dm.setup("fit")
    before = set(multiprocessing.active_children())
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"timed out after 1(\.0)? seconds"):
        next(iter(dm.train_dataloader()))
    assert time.monotonic() - started < 30
    assert not set(multiprocessing.active_children()) - before  # the stalled workers were stopped, not left behind
