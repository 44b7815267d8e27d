"""One split's curated stream: shards → ids → select before decode → decode → batches."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate
from webdataset.autodecode import Decoder, imagehandler
from webdataset.filters import shuffle as wds_shuffle

from .control import LoaderControl
from .epoch import (
    EpochPlan,
    Equalize,
    Mode,
    consumed_per_worker,
    epoch_rng,
    multiplicity,
    pad_ids,
    plan_epoch,
    stream_shuffle_seed,
)
from .errors import OnError, ShardError, SkipKind, check_on_error
from .shards import ShardIndex, ShardSpec, load_index
from .snapshot import CurationSnapshot, SnapshotView
from .tario import IOCounter, MemberReader, stream_samples
from .tarscan import DEFAULT_MAX_MEMBER_BYTES

log = logging.getLogger("curated_loader")

Transform = Callable[[dict], dict]
Augment = Callable[[dict, float], dict]
_FILL_ROUNDS = 8


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _parse_fields(fields: Sequence[str]) -> list[tuple[str, ...]]:
    """``("png;jpg", "cls")`` → ``[("png", "jpg"), ("cls",)]``."""
    if isinstance(fields, str):
        fields = (fields,)
    parsed = [tuple(alt.strip().lower() for alt in f.split(";") if alt.strip()) for f in fields]
    if not parsed or any(not alts for alts in parsed):
        raise ValueError(f"fields must name at least one member suffix each, got {fields!r}")
    return parsed


def _decoder(decode: Sequence[str | Callable], fields: list[tuple[str, ...]]) -> Decoder:
    handlers = [imagehandler(h) if isinstance(h, str) else h for h in decode]
    return Decoder(handlers, only=[alt for alts in fields for alt in alts])


class CuratedStream(IterableDataset):
    """An IterableDataset yielding ready batches ``(field_1, ..., field_k, ids, weights)``.

    Args:
        shards: brace pattern, glob, list of URLs, or an index JSON (see :func:`load_index`).
        fields: member suffixes a batch holds, in order; ``"png;jpg"`` takes the first present.
        batch_size: samples per batch; a worker's last batch may be smaller.
        mode: ``"stream"`` (sequential tar reads, pruned samples skip decode) or
            ``"indexed"`` (random access to kept samples only; local shards).
        seed: base of every random choice; shuffles are pure functions of (seed, epoch).
        shuffle: shuffle shards (stream) or ids (indexed) per epoch.
        shuffle_buffer: stream mode's sample shuffle buffer (0 turns it off).
        resample: read each kept sample ``round(weight)`` times (stochastically) and give it
            loss weight 1, instead of delivering weights with the batch.
        equalize: ``"pad"`` or ``"cut"`` — how ranks are made to yield equal batch counts.
        decode: webdataset image specs (e.g. ``"torchrgb"``: float CHW in [0, 1]) and/or
            handler callables ``(ext, data) -> value | None``; ``.cls``/``.npy``/``.json``
            etc. use webdataset's basic handlers.
        transform: ``sample_dict -> sample_dict`` after decoding.
        augment: ``(sample_dict, strength) -> sample_dict``, strength from the snapshot.
        on_error: ``"raise"`` (default: an error naming shard and key) or ``"skip"``
            (count per epoch, log, and fill the batch from kept samples).
        snapshot: share one with a trainer; default a fresh keep-all snapshot.
        rank, world_size: default to torch.distributed's, else 0 and 1.
        allow_pipe: let an index JSON's ``pipe:`` URLs run as shell commands (default: the
            ``CURATED_LOADER_ALLOW_PIPE`` environment variable; see :func:`load_index`).
        max_member_bytes: largest tar member read from a stream or compressed shard; a
            larger one is a ShardError (local tar files are checked against their size).
    """

    def __init__(
        self,
        shards: ShardSpec | ShardIndex,
        *,
        fields: Sequence[str] = ("png", "cls"),
        batch_size: int = 32,
        mode: Mode = "stream",
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        resample: bool = False,
        equalize: Equalize = "pad",
        decode: Sequence[str | Callable] = ("torchrgb",),
        transform: Transform | None = None,
        augment: Augment | None = None,
        on_error: OnError = "raise",
        snapshot: CurationSnapshot | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        collate: Callable[[list], Any] = default_collate,
        allow_pipe: bool | None = None,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mode not in ("stream", "indexed"):
            raise ValueError(f"mode must be 'stream' or 'indexed', got {mode!r}")
        if equalize not in ("pad", "cut"):
            raise ValueError(f"equalize must be 'pad' or 'cut', got {equalize!r}")
        self.on_error = check_on_error(on_error)
        self.max_member_bytes = int(max_member_bytes)
        self.index = load_index(shards, cache_dir=cache_dir, allow_pipe=allow_pipe, on_error=self.on_error, max_member_bytes=self.max_member_bytes)
        self.fields = _parse_fields(fields)
        self.batch_size = batch_size
        self.mode: Mode = mode
        self.seed = int(seed)
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.resample = resample
        self.equalize: Equalize = equalize
        self.decoder = _decoder(decode, self.fields)
        self.transform = transform
        self.augment = augment
        self.collate = collate
        if snapshot is not None and snapshot.num_samples != self.index.num_samples:
            raise ValueError(f"snapshot holds {snapshot.num_samples} samples, the shards {self.index.num_samples}")
        self.snapshot = snapshot or CurationSnapshot(self.index.num_samples)
        self.control = LoaderControl()
        default_rank, default_world = _world()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        self.num_workers = 0  # set by CuratedLoader; only used for planning

    @property
    def num_samples(self) -> int:
        return self.index.num_samples

    # -- planning ----------------------------------------------------------------------
    def _plan(self, view: SnapshotView, epoch: int, worker: int) -> tuple[np.ndarray, EpochPlan]:
        mult = multiplicity(view, self.seed, epoch, self.resample)
        plan = plan_epoch(
            self.index, mult, seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size,
            worker=worker, num_workers=self.num_workers, batch_size=self.batch_size, mode=self.mode,
            shuffle=self.shuffle, equalize=self.equalize,
        )
        return mult, plan

    def num_batches(self, epoch: int | None = None) -> int:
        """Batches this rank yields in ``epoch`` (default: the current one) under the current snapshot."""
        epoch = self.control.epoch if epoch is None else epoch
        return self._plan(self.snapshot.view(), epoch, 0)[1].rank_batches

    def __len__(self) -> int:
        return self.num_batches()

    # -- iteration ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        if info is not None and info.num_workers != max(1, self.num_workers):
            self.num_workers = info.num_workers
        run = _WorkerEpoch(self, worker=0 if info is None else info.id)
        try:
            yield from self._batches(run.samples())
        finally:
            run.close()

    def _batches(self, samples: Iterator[tuple]) -> Iterator[tuple]:
        while True:
            chunk = list(itertools.islice(samples, self.batch_size))
            if not chunk:
                return
            columns = list(zip(*chunk))
            fields = tuple(self.collate(list(col)) for col in columns[:-2])
            ids = torch.tensor(columns[-2], dtype=torch.int64)
            weights = torch.tensor(columns[-1], dtype=torch.float32)
            yield fields + (ids, weights)


def _field(sample: dict, alternatives: tuple[str, ...]) -> Any:
    for alt in alternatives:
        if alt in sample:
            return sample[alt]
    have = sorted(k for k in sample if not k.startswith("__"))
    raise ShardError(sample["__url__"], f"missing field {';'.join(alternatives)!r} (sample has {have})", key=sample["__key__"])


class _WorkerEpoch:
    """One worker's pass over one epoch: its share, then pad batches, then (skip mode)
    replacements for skipped samples; resumed epochs skip what was already delivered."""

    def __init__(self, stream: CuratedStream, worker: int) -> None:
        self.stream = stream
        self.worker = worker
        self.epoch = stream.control.epoch
        self.view = stream.snapshot.view()
        self.mult, self.plan = stream._plan(self.view, self.epoch, worker)
        self.reader = MemberReader(IOCounter())
        self.bad_ids: set[int] = set()

    def close(self) -> None:
        self.reader.close()
        self.stream.control.count_io(self.worker, self.reader.io.members, self.reader.io.bytes)

    def samples(self) -> Iterator[tuple]:
        """Decoded samples ``(*fields, id, weight)``, exactly as many as the plan says."""
        stream, share = self.stream, self.plan.share
        done = consumed_per_worker(self.plan.batches[stream.rank], stream.control.resume_batches(self.epoch))[self.worker]
        total = share.own + share.pad_batches * stream.batch_size
        skip = min(int(done) * stream.batch_size, total)
        raw = itertools.chain(
            self._own_raw(),
            self._ids_raw(self._pad(share.pad_batches * stream.batch_size), shuffle=True),
            self._fill_raw(),
        )
        return itertools.islice(self._decoded(itertools.islice(raw, skip, None)), total - skip)

    # -- raw samples (not decoded) -----------------------------------------------------
    def _pad(self, count: int, draw: int = 0) -> np.ndarray:
        s = self.stream
        return pad_ids(s.index, self.mult, self.plan, count, seed=s.seed, epoch=self.epoch, rank=s.rank, worker=self.worker, draw=draw)

    def _own_raw(self) -> Iterator[dict]:
        s, share = self.stream, self.plan.share
        if s.mode == "indexed":
            yield from self._ids_raw(share.ids)
            return
        raw = itertools.islice(self._shards_raw(share.shards, self.mult), share.own)
        if s.shuffle and s.shuffle_buffer > 1:
            seed = stream_shuffle_seed(s.seed, self.epoch, s.rank, self.worker)
            raw = wds_shuffle(s.shuffle_buffer, initial=s.shuffle_buffer, seed=seed)(raw)
        yield from raw

    def _fill_raw(self) -> Iterator[dict]:
        """Replacements for samples skipped under on_error="skip" (bounded, never endless)."""
        if self.stream.on_error != "skip":
            return
        for draw in range(1, _FILL_ROUNDS + 1):
            ids = self._pad(self.stream.batch_size, draw)
            yield from self._ids_raw(ids[[i not in self.bad_ids for i in ids.tolist()]])
        log.warning("worker %d: still short of samples after %d refill rounds; its epoch ends early", self.worker, _FILL_ROUNDS)

    def _skip(self, kind: SkipKind, error: ShardError, ids: Iterable[int]) -> None:
        """Raise in raise mode; else count the samples not counted before, and log."""
        if self.stream.on_error == "raise":
            raise error
        new = set(ids) - self.bad_ids
        self.bad_ids |= new
        self.stream.control.count_skip(self.worker, kind, len(new))
        log.warning("skipped %d sample(s): %s", len(new), error)

    def _shards_raw(self, shards: np.ndarray, mult: np.ndarray) -> Iterator[dict]:
        """Raw samples of whole shards in order; unwanted samples are never read into memory."""
        index = self.stream.index
        for shard in shards:
            url, base, expected = index.urls[shard], int(index.offsets[shard]), int(index.counts[shard])
            counts = mult[base : base + expected]
            started = 0  # samples of the shard begun; all but the last one begun are complete

            def wanted(pos: int) -> bool:
                nonlocal started
                started = pos + 1
                return pos < expected and counts[pos] > 0

            try:
                for sample in stream_samples(url, wanted, self.reader.io, self.stream.max_member_bytes):
                    pos = sample.pop("__pos__")
                    sample["__id__"] = base + pos
                    for repeat in range(int(counts[pos])):
                        yield dict(sample, __repeat__=repeat)
            except ShardError as error:  # the sample being read when it failed is lost too
                done = max(started - 1, 0)
                self._skip(SkipKind.MISSING if done else SkipKind.SHARD, error, range(base + done, base + expected))
                continue
            if started != expected:
                error = ShardError(url, f"the index says {expected} samples, the shard holds {started}: rebuild the index")
                self._skip(SkipKind.MISSING, error, range(base + started, base + expected))

    def _ids_raw(self, ids: np.ndarray, shuffle: bool = False) -> Iterator[dict]:
        """Raw samples for explicit ids (indexed reads, or one streaming pass per shard)."""
        if len(ids) == 0:
            return
        s = self.stream
        if s.mode == "indexed":
            shards, positions = s.index.locate(ids)
            repeats: dict[int, int] = {}
            for sid, shard, pos in zip(ids.tolist(), shards.tolist(), positions.tolist()):
                repeat = repeats[sid] = repeats.get(sid, -1) + 1
                try:
                    sample = self.reader.read(s.index.urls[shard], s.index.layout(shard), pos)
                except ShardError as error:
                    self._skip(SkipKind.SAMPLE, error, [sid])
                    continue
                del sample["__pos__"]
                yield dict(sample, __id__=sid, __repeat__=repeat)
            return
        counts = np.bincount(ids, minlength=s.index.num_samples).astype(np.int32)
        samples = list(self._shards_raw(np.unique(s.index.locate(ids)[0]), counts))
        if shuffle:
            order = epoch_rng(s.seed, self.epoch, self.worker).permutation(len(samples))
            samples = [samples[i] for i in order]
        yield from samples

    # -- decoded samples ---------------------------------------------------------------
    def _decoded(self, raw: Iterator[dict]) -> Iterator[tuple]:
        s = self.stream
        for sample in raw:
            sid = sample["__id__"]
            try:
                sample = s.decoder(sample)
            except Exception as exn:  # webdataset wraps handler errors; name shard and key
                error = ShardError(sample["__url__"], f"cannot decode ({exn.__cause__ or exn})", key=sample["__key__"])
                if s.on_error == "raise":
                    raise error from exn
                self._skip(SkipKind.SAMPLE, error, [sid])
                continue
            for key, value in sample.items():  # .npy & co. arrive as numpy: hand torch tensors on
                if isinstance(value, np.ndarray) and value.dtype != object:
                    sample[key] = torch.from_numpy(value)
            weight = 1.0 if s.resample else float(self.view.weight[sid])
            strength = float(self.view.strength[sid])
            sample.update(__epoch__=self.epoch, __seed__=s.seed, __weight__=weight, __strength__=strength)
            if s.transform is not None:
                sample = s.transform(sample)
            if s.augment is not None and strength > 0:
                sample = s.augment(sample, strength)
            try:
                values = tuple(_field(sample, alts) for alts in s.fields)
            except ShardError as error:
                self._skip(SkipKind.SAMPLE, error, [sid])
                continue
            yield values + (sid, weight)


class CuratedLoader(DataLoader):
    """A DataLoader over a :class:`CuratedStream` that tells its workers the epoch.

    Each ``iter()`` starts an epoch: the one set by :meth:`set_epoch`, else the value of
    ``epoch_fn()``, else one more than the last. Workers read the epoch and the snapshot
    once, at iterator start — persistent workers included.
    """

    def __init__(
        self,
        dataset: CuratedStream,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        epoch_fn: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        dataset.num_workers = num_workers
        super().__init__(
            dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None, **kwargs,
        )
        self.epoch_fn = epoch_fn
        self._next_epoch = 0
        self.min_epoch = 0  # a resumed run never goes back before the epoch it resumes in
        self.epoch = -1
        self.epoch_batches = 0  # batches of the epoch being iterated (this rank)

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make the iterator of ``epoch`` skip the ``batches_done`` batches already consumed."""
        self.dataset.control.set_resume(epoch, batches_done)

    def skip_counts(self) -> dict[str, int]:
        return self.dataset.control.skip_counts()

    def __iter__(self):  # type: ignore[override]
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._next_epoch
        self.epoch = max(epoch, self.min_epoch)
        self._next_epoch = self.epoch + 1
        self.dataset.control.start_epoch(self.epoch)
        self.epoch_batches = len(self.dataset)
        self._IterableDataset_len_called = self.epoch_batches  # curated epochs vary in length
        return super().__iter__()
