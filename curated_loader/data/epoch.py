"""Who reads what in an epoch: a pure function of (index, snapshot, seed, epoch, topology).

Every worker of every rank computes the same plan independently, so ranks agree on the
number of batches without communicating:

* shards are shuffled per (seed, epoch) and dealt to ranks, then to workers (``stream``);
  or kept ids are shuffled and dealt directly (``indexed``);
* each worker batches its own samples (its last batch may be partial);
* ranks are equalized in whole batches: with ``equalize="pad"`` (default) a rank short of
  the longest rank's batch count adds full batches resampled from its own kept samples;
  with ``equalize="cut"`` longer ranks drop trailing batches. With one rank neither happens
  and every kept sample is delivered exactly once per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .shards import ShardIndex
from .snapshot import SnapshotView

Mode = Literal["stream", "indexed"]
Equalize = Literal["pad", "cut"]


def epoch_rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """An independent generator for (seed, epoch, *stream); touches no global state."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, *[s & 0xFFFFFFFF for s in stream]])


_MULTIPLICITY, _SHARDS, _IDS, _PAD, _SHUFFLE = range(5)


def multiplicity(view: SnapshotView, seed: int, epoch: int, resample: bool) -> np.ndarray:
    """How often each sample is read this epoch: keep as 0/1, or (``resample``) the weight
    stochastically rounded to an integer count, so the expected count equals the weight."""
    if not resample:
        return view.keep.astype(np.int32)
    weight = np.where(view.keep, view.weight, 0.0).astype(np.float64)
    floor = np.floor(weight)
    extra = epoch_rng(seed, epoch, _MULTIPLICITY).random(weight.shape[0]) < (weight - floor)
    return (floor + extra).astype(np.int32)


@dataclass(frozen=True)
class WorkerShare:
    """What one worker of one rank delivers this epoch."""

    shards: np.ndarray  # stream mode: shard indices in reading order
    ids: np.ndarray | None  # indexed mode: ids in delivery order (with repeats); stream: None
    own: int  # samples it delivers from its share (after any cut)
    pad_batches: int  # full batches of resampled samples it adds
    batch_size: int

    @property
    def own_batches(self) -> int:
        return math.ceil(self.own / self.batch_size)

    @property
    def num_batches(self) -> int:
        return self.own_batches + self.pad_batches


@dataclass(frozen=True)
class EpochPlan:
    """Batch counts of every (rank, worker), and the share of the asking worker."""

    batches: np.ndarray  # int64[world, workers] after equalization
    share: WorkerShare

    @property
    def rank_batches(self) -> int:
        return int(self.batches.sum(axis=1)[0]) if self.batches.size else 0


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    csum = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def _deal(items: np.ndarray, rank: int, world: int, worker: int, workers: int) -> np.ndarray:
    return items[rank::world][worker::workers]


def _equalize(batches: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(cut, pad) batches per worker so that the row sums to ``target``."""
    cut = np.zeros_like(batches)
    pad = np.zeros_like(batches)
    left = batches.copy()
    delta = target - int(batches.sum())
    while delta < 0:  # cut from the worker holding the most batches (ties: the last one)
        w = len(left) - 1 - int(np.argmax(left[::-1]))
        left[w] -= 1
        cut[w] += 1
        delta += 1
    for i in range(delta):  # pad round-robin, starting with the first worker
        pad[i % len(pad)] += 1
    return cut, pad


def plan_epoch(
    index: ShardIndex,
    mult: np.ndarray,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    worker: int,
    num_workers: int,
    batch_size: int,
    mode: Mode = "stream",
    shuffle: bool = True,
    equalize: Equalize = "pad",
) -> EpochPlan:
    """The epoch's plan as seen by (rank, worker); ``num_workers`` counts 0 workers as 1."""
    workers = max(1, num_workers)
    if mode == "stream":
        order = np.arange(index.num_shards)
        if shuffle:
            order = epoch_rng(seed, epoch, _SHARDS).permutation(order)
        per_shard = _segment_sums(mult, index.offsets)
        counts = np.array(
            [[per_shard[_deal(order, r, world_size, w, workers)].sum() for w in range(workers)] for r in range(world_size)],
            dtype=np.int64,
        )
        ids = None
        shards = _deal(order, rank, world_size, worker, workers)
    elif mode == "indexed":
        all_ids = np.repeat(np.arange(index.num_samples, dtype=np.int64), mult)
        if shuffle:
            all_ids = epoch_rng(seed, epoch, _IDS).permutation(all_ids)
        total = len(all_ids)
        counts = np.array(
            [[len(range(r + w * world_size, total, world_size * workers)) for w in range(workers)] for r in range(world_size)],
            dtype=np.int64,
        )
        ids = _deal(all_ids, rank, world_size, worker, workers)
        shards = np.unique(index.locate(ids)[0]) if len(ids) else np.zeros(0, np.int64)
    else:
        raise ValueError(f"mode must be 'stream' or 'indexed', got {mode!r}")

    batches = -(-counts // batch_size)
    per_rank = batches.sum(axis=1)
    target = int(per_rank.max() if equalize == "pad" else per_rank.min()) if world_size > 1 else int(per_rank[0])
    if equalize not in ("pad", "cut"):
        raise ValueError(f"equalize must be 'pad' or 'cut', got {equalize!r}")
    final = np.zeros_like(batches)
    my_cut = my_pad = 0
    for r in range(world_size):
        cut, pad = _equalize(batches[r], target)
        final[r] = batches[r] - cut + pad
        if r == rank:
            my_cut, my_pad = int(cut[worker]), int(pad[worker])
    own_count = int(counts[rank, worker])
    own = own_count if my_cut == 0 else min(own_count, (int(batches[rank, worker]) - my_cut) * batch_size)
    share = WorkerShare(shards=shards, ids=None if ids is None else ids[:own], own=own, pad_batches=my_pad, batch_size=batch_size)
    return EpochPlan(batches=final, share=share)


def pad_ids(
    index: ShardIndex,
    mult: np.ndarray,
    plan: EpochPlan,
    count: int,
    *,
    seed: int,
    epoch: int,
    rank: int,
    worker: int,
    draw: int = 0,
) -> np.ndarray:
    """``count`` ids resampled (with replacement) from the worker's own kept samples, or
    the whole kept set when the worker holds none."""
    if count <= 0:
        return np.zeros(0, np.int64)
    share = plan.share
    if share.ids is not None and len(share.ids):
        pool = share.ids
    else:
        own = [np.repeat(np.arange(index.offsets[s], index.offsets[s + 1]), mult[index.offsets[s] : index.offsets[s + 1]]) for s in share.shards]
        pool = np.concatenate(own) if own else np.zeros(0, np.int64)
        if len(pool) == 0:
            pool = np.repeat(np.arange(index.num_samples, dtype=np.int64), mult)
    if len(pool) == 0:
        return np.zeros(0, np.int64)
    rng = epoch_rng(seed, epoch, _PAD, rank, worker, draw)
    return np.sort(rng.choice(pool, size=count, replace=True)).astype(np.int64)


def consumed_per_worker(batches: np.ndarray, consumed: int) -> np.ndarray:
    """How many batches each worker had delivered after ``consumed`` batches of its rank,
    given the DataLoader's round-robin over workers that still have batches."""
    batches = np.asarray(batches, dtype=np.int64)
    return np.bincount(round_robin_order(batches)[: max(int(consumed), 0)], minlength=len(batches)).astype(np.int64)


def round_robin_order(batches: np.ndarray) -> np.ndarray:
    """The worker that delivers each batch of a rank, in delivery order: the DataLoader
    takes one batch from each worker in turn, skipping workers that have run out."""
    batches = np.asarray(batches, dtype=np.int64)
    rounds = int(batches.max()) if batches.size else 0
    return np.array([w for r in range(rounds) for w in range(len(batches)) if batches[w] > r], dtype=np.int64)


@dataclass(frozen=True)
class ResumeRole:
    """What the worker in one loader slot does in a resumed epoch: it plays the original
    ``worker`` (same share, same shuffles) and skips that worker's ``done`` batches."""

    worker: int
    done: int


def resume_roles(batches: np.ndarray, consumed: int) -> list[ResumeRole | None]:
    """Which original worker each loader slot plays after ``consumed`` batches of a rank.

    A new iterator's round-robin starts again at slot 0, while the interrupted one would have
    continued with whichever worker was next. Dealing the original workers that still have
    batches to the slots in the order they would have delivered next (a rotation of the
    round-robin) makes the new iterator yield exactly the rest of the original order.
    Slots left over get ``None`` (they deliver nothing).
    """
    batches = np.asarray(batches, dtype=np.int64)
    order = round_robin_order(batches)
    consumed = min(max(int(consumed), 0), len(order))
    done = np.bincount(order[:consumed], minlength=len(batches))
    next_up = list(dict.fromkeys(order[consumed:].tolist()))  # first appearance = next in turn
    roles: list[ResumeRole | None] = [ResumeRole(w, int(done[w])) for w in next_up]
    return roles + [None] * (len(batches) - len(roles))


def stream_shuffle_seed(seed: int, epoch: int, rank: int, worker: int) -> int:
    return int(epoch_rng(seed, epoch, _SHUFFLE, rank, worker).integers(2**62))
