"""One worker's epoch as small iterator → iterator stages, in webdataset's style.

::

    own samples ─► pad ─► refill ─► skip resumed ─► decode ─► attach weight/strength
        ─► transform/augment ─► fields

Raw samples (``{__key__, __url__, __id__, __repeat__, ext: bytes}``) flow until
:func:`decode`; each stage is a generator over its input and its settings, so it can be
tested alone. :class:`RawSource` is the only stage helper that reads shards, and
:class:`SkipAccount` is the only place that decides between raising and a counted skip.
``pipeline._WorkerEpoch`` wires the stages for one (epoch, worker).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from webdataset.filters import shuffle as wds_shuffle

from .control import LoaderControl
from .epoch import IdCounts, Multiplicity
from .errors import OnError, ShardError, SkipKind
from .shards import ShardIndex
from .snapshot import SnapshotView
from .tario import MemberReader, stream_samples
from .tarscan import DEFAULT_MAX_MEMBER_BYTES

log = logging.getLogger("curated_loader")

Transform = Callable[[dict], dict]
Augment = Callable[[dict, float], dict]
FILL_ROUNDS = 8


class SkipAccount:
    """Raise a :class:`ShardError` (``on_error="raise"``) or count and log the samples it
    costs, each sample once per epoch, in the worker's row of the loader's counters."""

    def __init__(self, on_error: OnError, control: LoaderControl, slot: int) -> None:
        self.on_error = on_error
        self.control = control
        self.slot = slot
        self.bad_ids: set[int] = set()

    def __call__(self, kind: SkipKind, error: ShardError, ids: Iterable[int], cause: BaseException | None = None) -> None:
        if self.on_error == "raise":
            raise error from cause
        new = set(ids) - self.bad_ids
        self.bad_ids |= new
        self.control.count_skip(self.slot, kind, len(new))
        log.warning("skipped %d sample(s): %s", len(new), error)


class RawSource:
    """Raw (undecoded) samples of whole shards or of explicit ids; samples not asked for
    are never read into memory."""

    def __init__(self, index: ShardIndex, mode: str, reader: MemberReader, skips: SkipAccount,
                 max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> None:
        self.index = index
        self.mode = mode
        self.reader = reader
        self.skips = skips
        self.max_member_bytes = max_member_bytes

    def shards(self, shards: Iterable[int], mult: Multiplicity | IdCounts) -> Iterator[dict]:
        """Samples of ``shards`` in order, each repeated ``mult[id]`` times (0: not read);
        ``mult`` is read one shard's id range at a time."""
        index = self.index
        for shard in shards:
            url, base, expected = index.urls[shard], int(index.offsets[shard]), int(index.counts[shard])
            counts = mult[base : base + expected]
            started = 0  # samples of the shard begun; all but the last one begun are complete

            def wanted(pos: int) -> bool:
                nonlocal started
                started = pos + 1
                return pos < expected and counts[pos] > 0

            try:
                for sample in stream_samples(url, wanted, self.reader.io, self.max_member_bytes):
                    pos = sample.pop("__pos__")
                    sample["__id__"] = base + pos
                    for repeat in range(int(counts[pos])):
                        yield dict(sample, __repeat__=repeat)
            except ShardError as error:  # the sample being read when it failed is lost too
                done = max(started - 1, 0)
                self.skips(SkipKind.MISSING if done else SkipKind.SHARD, error, range(base + done, base + expected))
                continue
            if started != expected:
                error = ShardError(url, f"the index says {expected} samples, the shard holds {started}: rebuild the index")
                self.skips(SkipKind.MISSING, error, range(base + started, base + expected))

    def ids(self, ids: np.ndarray, order: np.random.Generator | None = None) -> Iterator[dict]:
        """Samples for explicit ids: random access (indexed mode, in the given order), or one
        streaming pass per shard (stream mode), then permuted by ``order`` when given."""
        if len(ids) == 0:
            return
        if self.mode == "indexed":
            yield from self._read(ids)
            return
        samples = list(self.shards(np.unique(self.index.locate(ids)[0]), IdCounts(ids)))
        if order is not None:
            samples = [samples[i] for i in order.permutation(len(samples))]
        yield from samples

    def _read(self, ids: np.ndarray) -> Iterator[dict]:
        shards, positions = self.index.locate(ids)
        repeats: dict[int, int] = {}
        for sid, shard, pos in zip(ids.tolist(), shards.tolist(), positions.tolist()):
            repeat = repeats[sid] = repeats.get(sid, -1) + 1
            try:
                sample = self.reader.read(self.index.urls[shard], self.index.layout(shard), pos)
            except ShardError as error:
                self.skips(SkipKind.SAMPLE, error, [sid])
                continue
            del sample["__pos__"]
            yield dict(sample, __id__=sid, __repeat__=repeat)


# -- the stages, in data-path order ------------------------------------------------------
def own_samples(
    source: RawSource, shards: np.ndarray, ids: np.ndarray | None, mult: Multiplicity, count: int,
    shuffle_buffer: int = 0, shuffle_seed: int | None = None,
) -> Iterator[dict]:
    """The worker's own share: its ids in order (indexed), or the first ``count`` wanted
    samples of its shards through a seeded shuffle buffer (stream)."""
    if ids is not None:
        yield from source.ids(ids)
        return
    raw = itertools.islice(source.shards(shards, mult), count)
    if shuffle_seed is not None and shuffle_buffer > 1:
        raw = wds_shuffle(shuffle_buffer, initial=shuffle_buffer, seed=shuffle_seed)(raw)
    yield from raw


def pad(data: Iterator[dict], source: RawSource, ids: np.ndarray, order: np.random.Generator | None = None) -> Iterator[dict]:
    """After the share: the resampled ``ids`` that fill this worker's pad batches."""
    yield from data
    yield from source.ids(ids, order)


def refill(
    data: Iterator[dict], source: RawSource, draw: Callable[[int], np.ndarray], rounds: int = FILL_ROUNDS, worker: int = 0,
) -> Iterator[dict]:
    """After everything planned (``on_error="skip"`` only): replacements for skipped samples,
    ``draw(round)`` ids per round minus known-bad ones, for at most ``rounds`` rounds."""
    yield from data
    skips = source.skips
    if skips.on_error != "skip":
        return
    for round_ in range(1, rounds + 1):
        ids = draw(round_)
        yield from source.ids(ids[[i not in skips.bad_ids for i in ids.tolist()]])
    log.warning("worker %d: still short of samples after %d refill rounds; its epoch ends early", worker, rounds)


def skip_resumed(data: Iterator[dict], count: int) -> Iterator[dict]:
    """A resumed epoch: drop the ``count`` raw samples delivered before the checkpoint
    (never decoded). Which worker's samples these are is settled by
    :func:`curated_loader.data.epoch.resume_roles`."""
    yield from itertools.islice(data, count, None)


def decode(data: Iterator[dict], decoder: Callable[[dict], dict], skips: SkipAccount) -> Iterator[dict]:
    """webdataset decoding; numeric numpy arrays become tensors; failures name shard and key."""
    for sample in data:
        sid = sample["__id__"]
        try:
            sample = decoder(sample)
        except Exception as exn:  # webdataset wraps handler errors; name shard and key
            skips(SkipKind.SAMPLE, ShardError(sample["__url__"], f"cannot decode ({exn.__cause__ or exn})", key=sample["__key__"]), [sid], exn)
            continue
        for key, value in sample.items():  # .npy & co. arrive as numpy: hand torch tensors on
            if isinstance(value, np.ndarray) and value.dtype != object:
                sample[key] = torch.from_numpy(value)
        yield sample


def attach_curation(data: Iterator[dict], view: SnapshotView, epoch: int, seed: int, resample: bool) -> Iterator[dict]:
    """Each sample's loss weight (1 when resampling delivers the weight as repeats) and
    augmentation strength from the snapshot, plus the epoch and seed augmentations use."""
    for sample in data:
        sid = sample["__id__"]
        weight = 1.0 if resample else float(view.weight[sid])
        sample.update(__epoch__=epoch, __seed__=seed, __weight__=weight, __strength__=float(view.strength[sid]))
        yield sample


def augment(data: Iterator[dict], transform: Transform | None, augment: Augment | None) -> Iterator[dict]:
    """The per-sample transform, then the augmentation at the sample's strength (if > 0).
    The sample's id and weight survive whatever dict these return."""
    for sample in data:
        sid, weight, strength = sample["__id__"], sample["__weight__"], sample["__strength__"]
        url, key = sample["__url__"], sample["__key__"]
        if transform is not None:
            sample = transform(sample)
        if augment is not None and strength > 0:
            sample = augment(sample, strength)
        sample.update(__id__=sid, __weight__=weight)
        sample.setdefault("__url__", url)
        sample.setdefault("__key__", key)
        yield sample


def field(sample: dict, alternatives: tuple[str, ...]) -> Any:
    """The first of ``alternatives`` the sample holds; a ShardError naming them otherwise."""
    for alt in alternatives:
        if alt in sample:
            return sample[alt]
    have = sorted(k for k in sample if not k.startswith("__"))
    raise ShardError(sample["__url__"], f"missing field {';'.join(alternatives)!r} (sample has {have})", key=sample["__key__"])


def to_fields(data: Iterator[dict], fields: Sequence[tuple[str, ...]], skips: SkipAccount) -> Iterator[tuple]:
    """``(*fields, id, weight, repeat)`` per sample, the batch's columns."""
    for sample in data:
        try:
            values = tuple(field(sample, alts) for alts in fields)
        except ShardError as error:
            skips(SkipKind.SAMPLE, error, [sample["__id__"]])
            continue
        yield values + (sample["__id__"], sample["__weight__"], sample.get("__repeat__", 0))
