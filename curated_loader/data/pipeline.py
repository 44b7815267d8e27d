"""One split's curated stream: shards → ids → select before decode → decode → batches."""

from __future__ import annotations

import itertools
import logging
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate
from webdataset.autodecode import Decoder, imagehandler

from . import stages
from .control import LoaderControl
from .epoch import (
    EpochPlan,
    Equalize,
    Mode,
    Multiplicity,
    ResumeRole,
    epoch_rng,
    multiplicity,
    pad_ids,
    plan_epoch,
    resume_roles,
    stream_shuffle_seed,
)
from .errors import OnError, ShardError, check_on_error
from .remote import require_local
from .shards import ShardIndex, ShardSpec, load_index
from .snapshot import CurationSnapshot, SnapshotView
from .stages import Augment, SkipAccount, Transform
from .tario import IOCounter, MemberReader
from .tarscan import DEFAULT_MAX_MEMBER_BYTES

log = logging.getLogger("curated_loader")


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
    """An IterableDataset yielding ready batches ``(field_1, ..., field_k, ids, weights)``
    (``with_repeats=True``: ``(..., ids, weights, repeats)``).

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
        with_repeats: also deliver each sample's copy number (int64, 0 for its first copy in
            the epoch; padding and resampling make more), which seeds augmentation on the
            training device exactly as ``__repeat__`` seeds it in the workers.
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
        with_repeats: bool = False,
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
        if mode == "indexed":
            require_local(self.index.urls)
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
        self.with_repeats = with_repeats
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

    def skip_counts(self) -> dict[str, int]:
        """Samples skipped this epoch under ``on_error="skip"``, by kind, and the shards left
        out of the index as unreadable (``unreadable_shards``, for the whole run)."""
        return {**self.control.skip_counts(), "unreadable_shards": len(self.index.skipped)}

    # -- planning ----------------------------------------------------------------------
    def _plan(self, view: SnapshotView, epoch: int, worker: int, counts_only: bool = False) -> tuple[Multiplicity, EpochPlan]:
        mult = multiplicity(view, self.seed, epoch, self.resample)
        plan = plan_epoch(
            self.index, mult, seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size,
            worker=worker, num_workers=self.num_workers, batch_size=self.batch_size, mode=self.mode,
            shuffle=self.shuffle, equalize=self.equalize, counts_only=counts_only,
        )
        return mult, plan

    def num_batches(self, epoch: int | None = None) -> int:
        """Batches this rank yields in ``epoch`` (default: the current one) under the current snapshot."""
        epoch = self.control.epoch if epoch is None else epoch
        return self._plan(self.snapshot.view(), epoch, 0, counts_only=True)[1].rank_batches

    def __len__(self) -> int:
        return self.num_batches()

    # -- iteration ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        if info is not None and info.num_workers != max(1, self.num_workers):
            self.num_workers = info.num_workers
        run = _WorkerEpoch(self, slot=0 if info is None else info.id)
        try:
            yield from self._batches(run.samples())
        except ShardError as error:
            if info is None:
                raise
            yield _WorkerFailure.of(error, info.id)  # re-raised as itself by the loader's iterator
        finally:
            run.close()

    def _batches(self, samples: Iterator[tuple]) -> Iterator[tuple]:
        while True:
            chunk = list(itertools.islice(samples, self.batch_size))
            if not chunk:
                return
            columns = list(zip(*chunk))
            fields = tuple(self.collate(list(col)) for col in columns[:-3])
            ids = torch.tensor(columns[-3], dtype=torch.int64)
            weights = torch.tensor(columns[-2], dtype=torch.float32)
            repeats = (torch.tensor(columns[-1], dtype=torch.int64),) if self.with_repeats else ()
            yield fields + (ids, weights) + repeats


class _WorkerEpoch:
    """One loader worker's pass over one epoch: the stages of :mod:`.stages`, wired.

    The worker in loader slot ``slot`` normally plays worker ``slot`` of the plan; in a
    resumed epoch it may play another one (see :func:`resume_roles`) and skips what that
    worker delivered before the checkpoint — the only place resuming touches the data path.
    """

    def __init__(self, stream: CuratedStream, slot: int) -> None:
        self.stream = stream
        self.slot = slot
        self.epoch = stream.control.epoch
        self.view = stream.snapshot.view()
        self.mult, self.plan = stream._plan(self.view, self.epoch, slot)
        self.role = self._role()
        if self.role is not None and self.role.worker != slot:
            self.plan = stream._plan(self.view, self.epoch, self.role.worker)[1]
        self.reader = MemberReader(IOCounter())
        self.skips = SkipAccount(stream.on_error, stream.control, slot)

    def _role(self) -> ResumeRole | None:
        consumed = self.stream.control.resume_batches(self.epoch)
        if consumed == 0:
            return ResumeRole(self.slot, 0)
        return resume_roles(self.plan.batches[self.stream.rank], consumed)[self.slot]

    def close(self) -> None:
        self.reader.close()
        self.stream.control.count_io(self.slot, self.reader.io.members, self.reader.io.bytes)

    def _pad_ids(self, count: int, draw: int = 0) -> np.ndarray:
        s = self.stream
        return pad_ids(s.index, self.mult, self.plan, count, seed=s.seed, epoch=self.epoch, rank=s.rank, worker=self.role.worker, draw=draw)

    def samples(self) -> Iterator[tuple]:
        """Decoded samples ``(*fields, id, weight)``, exactly as many as the plan says."""
        if self.role is None:
            return iter(())
        s, share, worker = self.stream, self.plan.share, self.role.worker
        total = share.own + share.pad_batches * s.batch_size
        skip = min(self.role.done * s.batch_size, total)
        source = stages.RawSource(s.index, s.mode, self.reader, self.skips, s.max_member_bytes)
        shuffle_seed = stream_shuffle_seed(s.seed, self.epoch, s.rank, worker) if s.shuffle else None
        data = stages.own_samples(source, share.shards, share.ids, self.mult, share.own, s.shuffle_buffer, shuffle_seed)
        data = stages.pad(data, source, self._pad_ids(share.pad_batches * s.batch_size), epoch_rng(s.seed, self.epoch, worker))
        data = stages.refill(data, source, lambda draw: self._pad_ids(s.batch_size, draw), worker=worker)
        data = stages.skip_resumed(data, skip)
        data = stages.decode(data, s.decoder, self.skips)
        data = stages.attach_curation(data, self.view, self.epoch, s.seed, s.resample)
        data = stages.augment(data, s.transform, s.augment)
        return itertools.islice(stages.to_fields(data, s.fields, self.skips), total - skip)


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
        self._running = False  # an iterator of ``epoch`` has not run out yet

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make the iterator of ``epoch`` skip the ``batches_done`` batches already consumed;
        the remaining batches come in the interrupted iterator's order when the worker count
        is the one the interrupted run used."""
        self.dataset.control.set_resume(epoch, batches_done)

    def skip_counts(self) -> dict[str, int]:
        return self.dataset.skip_counts()

    def upcoming_epoch(self) -> int:
        """The epoch the next ``iter()`` starts."""
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._next_epoch
        return max(epoch, self.min_epoch)

    def __len__(self) -> int:
        """Batches of this rank's epoch: the running one, else the one the next ``iter()``
        starts, planned from the current snapshot (a resumed epoch counts its skipped batches)."""
        upcoming = self.upcoming_epoch()
        if self._running or upcoming == self.epoch:
            return self.epoch_batches
        return self.dataset.num_batches(upcoming)

    def __iter__(self):  # type: ignore[override]
        self.epoch = self.upcoming_epoch()
        self._next_epoch = self.epoch + 1
        self.dataset.control.start_epoch(self.epoch)
        self.epoch_batches = self.dataset.num_batches(self.epoch)
        self._IterableDataset_len_called = self.epoch_batches  # curated epochs vary in length
        self._running = True
        return _LoaderIterator(self, super().__iter__())


class _WorkerTraceback(Exception):
    """The traceback of an exception raised in a loader worker, as text."""


@dataclass(frozen=True)
class _WorkerFailure:
    """A ShardError raised in a loader worker, sent through the data queue in place of a
    batch so that the main process raises the same error (torch would rewrap it)."""

    error_type: type
    url: str
    problem: str
    key: str | None
    worker: int
    traceback: str

    @classmethod
    def of(cls, error: ShardError, worker: int) -> _WorkerFailure:
        return cls(type(error), error.url, error.problem, error.key, worker, traceback.format_exc())

    def reraise(self) -> None:
        try:
            error = self.error_type(self.url, self.problem, key=self.key)
        except Exception:  # a subclass with another signature: the base class says the same
            error = ShardError(self.url, self.problem, key=self.key)
        raise error from _WorkerTraceback(f"in DataLoader worker {self.worker}:\n{self.traceback}")


class _LoaderIterator:
    """The DataLoader's iterator, raising a worker's :class:`ShardError` as itself.

    An epoch ended by an error stops its workers before the error leaves ``__next__``.
    Left to the garbage collector, the abandoned DataLoader iterator (kept alive by the
    error's traceback) would be collected together with its index queues, whose finalizers
    close the queues' feeder threads first: the final ``None`` never reaches the workers,
    and torch waits 5 s per worker before killing them.
    """

    def __init__(self, loader: CuratedLoader, batches: Iterator) -> None:
        self._loader = loader
        self._batches = batches
        self._closed = False

    def __iter__(self) -> _LoaderIterator:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        try:
            batch = next(self._batches)
        except StopIteration:
            self._loader._running = False
            raise
        except BaseException:  # a worker's error, a timeout, an interrupt: the epoch is over
            self.close()
            raise
        if isinstance(batch, _WorkerFailure):
            self.close()
            batch.reraise()
        return batch

    def close(self) -> None:
        """End the epoch now and stop its workers; a loader with persistent workers starts
        new ones at its next ``iter()``. Closing twice does nothing more."""
        if self._closed:
            return
        self._closed = True
        self._loader._running = False
        shutdown = getattr(self._batches, "_shutdown_workers", None)
        if shutdown is None:  # no workers (num_workers=0)
            return
        shutdown()
        if self._loader._iterator is self._batches:
            self._loader._iterator = None

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batches, name)
