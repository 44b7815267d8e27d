"""Who reads what in an epoch: a pure function of (index, snapshot, seed, epoch, topology).

Every worker of every rank computes the same plan independently, so ranks agree on the
number of batches without communicating:

* shards are shuffled per (seed, epoch) and dealt to ranks, then to workers (``stream``);
  or kept ids are shuffled and dealt directly (``indexed``: a worker evaluates the shuffle,
  a :class:`~.permutation.KeyedPermutation`, at its own positions only);
* each worker batches its own samples (its last batch may be partial);
* ranks are equalized in whole batches: with ``equalize="pad"`` (default) a rank short of
  the longest rank's batch count adds full batches resampled from its own kept samples;
  with ``equalize="cut"`` longer ranks drop trailing batches. With one rank neither happens
  and every kept sample is delivered exactly once per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from .permutation import KeyedPermutation
from .shards import ShardIndex
from .snapshot import SnapshotView

Mode = Literal["stream", "indexed"]
Equalize = Literal["pad", "cut"]


def epoch_rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """An independent generator for (seed, epoch, *stream); touches no global state."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, *[s & 0xFFFFFFFF for s in stream]])


_MULTIPLICITY, _SHARDS, _IDS, _PAD, _SHUFFLE = range(5)


#: Ids per step where the multiplicity of every id is summed (:meth:`Multiplicity.segment_sums`).
MULTIPLICITY_STEP = 1 << 20


class Multiplicity:
    """How often each sample is read this epoch: keep as 0/1, or (``resample``) the weight
    stochastically rounded to an integer count, so the expected count equals the weight.

    Computed for a range of ids when asked, never for all N at once unless :meth:`array` or
    :meth:`repeated_ids` is called: ``mult[lo:hi]`` (int32; a stream-mode worker reads its
    shards' ranges), :meth:`segment_sums` (per shard), :meth:`total` and :meth:`ids_at` (an
    indexed-mode worker's ids), each in steps of :data:`MULTIPLICITY_STEP` ids. The
    resampling draws are one generator stream over the ids in order, entered at ``lo``."""

    def __init__(self, view: SnapshotView, seed: int, epoch: int, resample: bool) -> None:
        self.view = view
        self.seed = seed
        self.epoch = epoch
        self.resample = resample

    def __len__(self) -> int:
        return self.view.num_samples

    def __getitem__(self, ids: slice) -> np.ndarray:
        if not isinstance(ids, slice):
            raise TypeError(f"Multiplicity takes a slice of ids, got {ids!r}")
        lo, hi, step = ids.indices(len(self))
        if step != 1:
            raise ValueError(f"Multiplicity takes a contiguous slice of ids, got step {step}")
        return self._range(lo, max(lo, hi))

    def _range(self, lo: int, hi: int) -> np.ndarray:
        keep = self.view.keep_range(lo, hi)
        if not self.resample:
            return keep.astype(np.int32)
        weight = self.view.weight[lo:hi].astype(np.float64)  # exact (numpy's float16 arithmetic is slow)
        weight *= keep
        floor = np.floor(weight)
        weight -= floor  # the fraction
        draws = epoch_rng(self.seed, self.epoch, _MULTIPLICITY)
        draws.bit_generator.advance(lo)  # one 64-bit step per draw: the stream's values at ids lo..hi-1
        return floor.astype(np.int32) + (draws.random(hi - lo) < weight)

    def array(self) -> np.ndarray:
        """int32[N]: every id's multiplicity, computed step by step into one array."""
        out = np.empty(len(self), dtype=np.int32)
        for lo in range(0, len(self), MULTIPLICITY_STEP):
            out[lo : lo + MULTIPLICITY_STEP] = self._range(lo, min(len(self), lo + MULTIPLICITY_STEP))
        return out

    def repeated_ids(self) -> np.ndarray:
        """int64: every id as often as it is read this epoch, in id order (what indexed mode
        shuffles and deals)."""
        counts = self.array()
        ids = np.flatnonzero(counts)
        return np.repeat(ids, counts[ids])

    def ids_at(self, positions: np.ndarray) -> np.ndarray:
        """int64: the entries of :meth:`repeated_ids` at ``positions`` (any order), found step
        by step without making that list: memory by the positions asked for, not by N."""
        positions = np.asarray(positions, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(self._step_reads)])  # reads before each step
        if positions.size and (positions.min() < 0 or positions.max() >= starts[-1]):
            raise IndexError(f"positions must lie in [0, {int(starts[-1])})")
        step = np.searchsorted(starts, positions, "right") - 1  # the step whose ids fill each position
        order = np.argsort(step.astype(np.uint16) if len(starts) <= 1 << 16 else step, kind="stable")  # radix sort
        out = np.empty(len(positions), dtype=np.int64)
        done = 0
        for s, count in enumerate(np.bincount(step, minlength=len(starts) - 1).tolist()):
            if not count:
                continue
            lo, hi = s * MULTIPLICITY_STEP, min(len(self), (s + 1) * MULTIPLICITY_STEP)
            listed = np.repeat(np.arange(lo, hi), self._range(lo, hi))  # this step's part of repeated_ids()
            at = order[done : done + count]
            out[at] = listed[positions[at] - starts[s]]
            done += count
        return out

    @cached_property
    def _step_reads(self) -> np.ndarray:
        """int64 reads of the ids of each step of :data:`MULTIPLICITY_STEP` (one pass)."""
        n = len(self)
        return np.array([self._range(lo, min(n, lo + MULTIPLICITY_STEP)).sum(dtype=np.int64)
                         for lo in range(0, n, MULTIPLICITY_STEP)], dtype=np.int64)

    def total(self) -> int:
        """Reads of all ids together (one pass, kept for :meth:`ids_at`)."""
        return int(self._step_reads.sum())

    def segment_sums(self, offsets: np.ndarray) -> np.ndarray:
        """int64 sums over the id ranges ``[offsets[i], offsets[i + 1])`` (``offsets``
        ascending, from 0 to N), taken step by step."""
        prefix = np.zeros(len(offsets), dtype=np.int64)  # the sum before each offset
        total, n = 0, len(self)
        for lo in range(0, n, MULTIPLICITY_STEP):
            hi = min(n, lo + MULTIPLICITY_STEP)
            running = np.cumsum(self._range(lo, hi), dtype=np.int64)
            inside = slice(int(np.searchsorted(offsets, lo, "right")), int(np.searchsorted(offsets, hi, "right")))
            prefix[inside] = total + running[offsets[inside] - lo - 1]  # offsets in (lo, hi]
            total += int(running[-1])
        return np.diff(prefix)


class IdCounts:
    """How often each id occurs in ``ids``, read by id range as :class:`Multiplicity` is
    (``counts[lo:hi]``, int32), without a full-length array: for reading explicit ids shard by
    shard."""

    def __init__(self, ids: np.ndarray) -> None:
        self.sorted = np.sort(np.asarray(ids, dtype=np.int64))

    def __getitem__(self, ids: slice) -> np.ndarray:
        lo, hi = int(ids.start), int(ids.stop)
        first, last = np.searchsorted(self.sorted, [lo, hi])
        return np.bincount(self.sorted[first:last] - lo, minlength=hi - lo).astype(np.int32)


def multiplicity(view: SnapshotView, seed: int, epoch: int, resample: bool) -> Multiplicity:
    """This epoch's :class:`Multiplicity` under ``view``."""
    return Multiplicity(view, seed, epoch, resample)


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


def _deal(items: np.ndarray, rank: int, world: int, worker: int, workers: int) -> np.ndarray:
    return items[rank::world][worker::workers]


def _indexed_share(
    mult: Multiplicity, total: int, rank: int, world: int, worker: int, workers: int, seed: int, epoch: int, shuffle: bool,
) -> np.ndarray:
    """The ids dealt to (rank, worker) from the list of ``total`` kept ids (repeated as
    read), shuffled: the list's entries at the worker's positions only (dealt as :func:`_deal`)."""
    positions = np.arange(rank + worker * world, total, world * workers)
    if shuffle:
        positions = KeyedPermutation.seeded(total, epoch_rng(seed, epoch, _IDS))(positions)
    return mult.ids_at(positions)


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
    mult: Multiplicity,
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
    counts_only: bool = False,
) -> EpochPlan:
    """The epoch's plan as seen by (rank, worker); ``num_workers`` counts 0 workers as 1.
    ``counts_only``: the batch counts alone (in indexed mode the share's ids and shards are
    not looked up and stay empty), e.g. for the main process's batch count."""
    workers = max(1, num_workers)
    if mode == "stream":
        order = np.arange(index.num_shards)
        if shuffle:
            order = epoch_rng(seed, epoch, _SHARDS).permutation(order)
        per_shard = mult.segment_sums(index.offsets)
        counts = np.array(
            [[per_shard[_deal(order, r, world_size, w, workers)].sum() for w in range(workers)] for r in range(world_size)],
            dtype=np.int64,
        )
        ids = None
        shards = _deal(order, rank, world_size, worker, workers)
    elif mode == "indexed":
        total = mult.total()  # the length of mult.repeated_ids(), the list that is shuffled and dealt
        counts = np.array(
            [[len(range(r + w * world_size, total, world_size * workers)) for w in range(workers)] for r in range(world_size)],
            dtype=np.int64,
        )
        ids = np.zeros(0, np.int64) if counts_only else _indexed_share(mult, total, rank, world_size, worker, workers, seed, epoch, shuffle)
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
    mult: Multiplicity,
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
            pool = mult.repeated_ids()
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
