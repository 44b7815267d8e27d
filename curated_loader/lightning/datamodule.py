"""``CuratedDataModule``: a LightningDataModule streaming curated WebDataset shards."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch

from ..augment import augment_batch
from ..checks import ConfigError, OneOf, Range, run_checks
from ..data.epoch import Equalize, Mode
from ..data.errors import OnError
from ..data.pipeline import Augment, CuratedLoader, CuratedStream, Transform
from ..data.shards import ShardIndex, ShardSpec
from ..data.snapshot import CurationSnapshot
from ..data.tarscan import DEFAULT_MAX_MEMBER_BYTES

# Lightning warns that an IterableDataset's __len__ may be wrong with several workers; a
# curated stream plans every worker's share, so its length is exact.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined", category=UserWarning)


def _non_empty(name: str, value: Any) -> None:
    if isinstance(value, str) or not value:
        raise ConfigError(name, f"must name at least one member suffix, got {value!r}")


_ARGUMENT_CHECKS = {
    "fields": _non_empty, "batch_size": Range(1), "eval_batch_size": Range(1, optional=True),
    "num_workers": Range(0), "shuffle_buffer": Range(0), "mode": OneOf(("stream", "indexed")),
    "equalize": OneOf(("pad", "cut")), "on_error": OneOf(("raise", "skip")),
    "augment_on": OneOf(("worker", "device")), "worker_timeout": Range(0.0), "max_member_bytes": Range(1),
}


@dataclass
class BatchContext:
    """Ids and curation weights of the training batch now in ``training_step``."""

    ids: torch.Tensor  # int64[B]
    weights: torch.Tensor  # float32[B]


class CuratedDataModule(L.LightningDataModule):
    """Train/val/test shard sets as curated streams; a drop-in LightningDataModule.

    Batches reach ``training_step`` as the user's fields only (``x, y = batch``); their
    sample ids and curation weights are kept in :attr:`batch` for the loss reducer.
    Validation and test sets are read whole, unshuffled, without curation.

    Args:
        train_shards, val_shards, test_shards: brace pattern, glob, list or index JSON.
        fields: member suffixes a batch holds, in order (``"png;jpg"`` takes the first present).
        batch_size / eval_batch_size: samples per batch for training / evaluation.
        num_workers, persistent_workers, pin_memory: as for a DataLoader.
        seed: every shuffle and draw is a pure function of (seed, epoch).
        mode: ``"stream"`` or ``"indexed"`` (see :class:`CuratedStream`).
        resample: deliver curation weights as repeat counts instead of loss weights.
        equalize: ``"pad"`` or ``"cut"`` — how ranks get equal batch counts.
        augment: ``(sample, strength) -> sample`` run in the loader workers, or (with
            ``augment_on="device"``) an augmentation with a batched form (``aug.batch``, e.g.
            the built-ins in :mod:`curated_loader.augment`) applied to each training batch
            on the training device, its ``field`` naming the batch element it augments.
        decode, transform, eval_transform, on_error, shuffle_buffer, allow_pipe,
        max_member_bytes: see :class:`CuratedStream`.
        worker_timeout: seconds to wait for a batch from a loader worker before raising
            (DataLoader ``timeout``); 0 (default) waits as long as it takes (see the README).
    """

    #: argument → range check, run at construction (and by the Hydra schema validation)
    argument_checks = _ARGUMENT_CHECKS

    def __init__(
        self,
        train_shards: ShardSpec | ShardIndex,
        val_shards: ShardSpec | ShardIndex | None = None,
        test_shards: ShardSpec | ShardIndex | None = None,
        *,
        fields: Sequence[str] = ("png", "cls"),
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        persistent_workers: bool = True,
        pin_memory: bool = False,
        seed: int = 0,
        mode: Mode = "stream",
        shuffle_buffer: int = 1000,
        resample: bool = False,
        equalize: Equalize = "pad",
        decode: Sequence[str | Callable] = ("torchrgb",),
        transform: Transform | None = None,
        eval_transform: Transform | None = None,
        augment: Augment | None = None,
        augment_on: Literal["worker", "device"] = "worker",
        on_error: OnError = "raise",
        cache_dir: str | os.PathLike | None = None,
        worker_timeout: float = 0.0,
        allow_pipe: bool | None = None,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ) -> None:
        run_checks(locals(), self.argument_checks)
        super().__init__()
        self.shards = {"train": train_shards, "val": val_shards, "test": test_shards}
        self.fields = tuple(fields)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.mode: Mode = mode
        self.shuffle_buffer = shuffle_buffer
        self.resample = resample
        self.equalize: Equalize = equalize
        self.decode = tuple(decode)
        self.transform = transform
        self.eval_transform = eval_transform if eval_transform is not None else transform
        if augment is not None and augment_on == "device":
            if not callable(getattr(augment, "batch", None)):
                raise ValueError("augment_on='device' needs an augmentation with a batched form (.batch)")
            if getattr(augment, "field", None) not in self.fields:
                raise ValueError(f"device augmentation field {getattr(augment, 'field', None)!r} is not one of fields {self.fields}")
        self.augment = augment
        self.augment_on = augment_on
        self._strength: tuple[int, torch.Tensor] | None = None  # (snapshot version, strength on the device)
        self.on_error: OnError = on_error
        self.cache_dir = cache_dir
        self.worker_timeout = float(worker_timeout)
        self.allow_pipe = allow_pipe
        self.max_member_bytes = max_member_bytes
        self.streams: dict[str, CuratedStream] = {}
        self.batch: BatchContext | None = None
        self._train_loader: CuratedLoader | None = None
        self._position = (-1, 0)  # (epoch, training batches delivered in it)
        self._resume: tuple[int, int] | None = None  # (epoch to resume in, batches already done)

    # -- building ----------------------------------------------------------------------
    def _rank_world(self) -> tuple[int | None, int | None]:
        if self.trainer is None:
            return None, None
        return self.trainer.global_rank, self.trainer.world_size

    def _stream(self, split: str) -> CuratedStream:
        stream = self.streams.get(split)
        if stream is None:
            if self.shards[split] is None:
                raise ValueError(f"no {split}_shards were given to CuratedDataModule")
            rank, world = self._rank_world()
            train = split == "train"
            stream = CuratedStream(
                self.shards[split], fields=self.fields, batch_size=self.batch_size if train else self.eval_batch_size,
                mode=self.mode if train else "stream", seed=self.seed, shuffle=train,
                shuffle_buffer=self.shuffle_buffer, resample=self.resample and train, equalize=self.equalize,
                decode=self.decode, transform=self.transform if train else self.eval_transform,
                augment=self.augment if train and self.augment_on == "worker" else None,
                on_error=self.on_error, rank=rank, world_size=world,
                cache_dir=self.cache_dir, allow_pipe=self.allow_pipe, max_member_bytes=self.max_member_bytes,
                with_repeats=train and self._augments_on_device,
            )
            stream.num_workers = self.num_workers  # its loader's; epoch lengths are planned per worker
            self.streams[split] = stream
        return stream

    def setup(self, stage: str | None = None) -> None:
        self._stream("train")
        for split in ("val", "test"):
            if self.shards[split] is not None:
                self._stream(split)
        if self._resume is not None:
            self._stream("train").control.set_resume(*self._resume)

    @property
    def snapshot(self) -> CurationSnapshot:
        """The training set's shared curation snapshot (what the callback publishes into)."""
        return self._stream("train").snapshot

    @property
    def train_stream(self) -> CuratedStream:
        return self._stream("train")

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, split: str) -> CuratedLoader:
        train = split == "train"
        return CuratedLoader(
            self._stream(split), num_workers=self.num_workers,
            persistent_workers=self.persistent_workers, pin_memory=self.pin_memory,
            epoch_fn=self._current_epoch if train else None, timeout=self.worker_timeout if self.num_workers > 0 else 0,
        )

    def train_dataloader(self) -> CuratedLoader:
        self._train_loader = self._loader("train")
        if self._resume is not None:
            self._train_loader.min_epoch = self._resume[0]
        return self._train_loader

    def val_dataloader(self) -> CuratedLoader | list:
        return self._loader("val") if self.shards["val"] is not None else []

    def test_dataloader(self) -> CuratedLoader | list:
        return self._loader("test") if self.shards["test"] is not None else []

    def num_training_batches(self, epoch: int | None = None) -> int:
        """Batches this rank yields in ``epoch`` under the current snapshot."""
        return self._stream("train").num_batches(epoch)

    def skip_counts(self) -> dict[str, int]:
        """Samples skipped this epoch under ``on_error="skip"``, by kind (see :meth:`CuratedStream.skip_counts`)."""
        return self._stream("train").skip_counts()

    # -- the batch on its way to training_step -----------------------------------------
    @property
    def _augments_on_device(self) -> bool:
        return self.augment is not None and self.augment_on == "device"

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not (isinstance(batch, (tuple, list)) and len(batch) - len(self.fields) in (2, 3)):
            return batch
        n = len(self.fields)
        fields, (ids, weights), repeats = list(batch[:n]), batch[n : n + 2], batch[n + 2] if len(batch) > n + 2 else None
        trainer = self.trainer
        if trainer is None or trainer.training:
            self.batch = BatchContext(ids=ids, weights=weights)
            epoch = self._train_loader.epoch if self._train_loader is not None else self._current_epoch()
            done = self._position[1] if self._position[0] == epoch else 0
            self._position = (epoch, done + 1)
            if self._augments_on_device:
                position = self.fields.index(self.augment.field)
                fields[position] = self._augment_on_device(fields[position], ids, epoch, repeats)
        return fields[0] if len(fields) == 1 else tuple(fields)

    def _augment_on_device(self, x: torch.Tensor, ids: torch.Tensor, epoch: int, repeats: torch.Tensor | None) -> torch.Tensor:
        """The batched augmentation, each sample at its snapshot strength and seeded by its copy
        number as in the workers (no host sync)."""
        snapshot = self.snapshot
        if self._strength is None or self._strength[0] != snapshot.version or self._strength[1].device != ids.device:
            self._strength = (snapshot.version, snapshot.strength.to(ids.device))
        strength = self._strength[1][ids]
        return augment_batch(self.augment, x, strength, ids, epoch, self.seed, repeat=repeats)

    # -- checkpoints -------------------------------------------------------------------
    @property
    def completed_epoch(self) -> int | None:
        """The training epoch whose last batch was the last one delivered, if any."""
        epoch, done = self._position
        loader = self._train_loader
        return epoch if loader is not None and loader.epoch == epoch and done >= loader.epoch_batches > 0 else None

    def state_dict(self) -> dict[str, Any]:
        epoch, done = self._position
        return {
            "seed": self.seed, "epoch": epoch, "batches_done": done, "epoch_complete": self.completed_epoch == epoch,
            "mode": self.mode, "num_workers": self.num_workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where the checkpoint left off: the rest of an interrupted epoch, or the next one.

        The rest of an epoch comes in the original order only with the loader worker count
        the checkpoint was taken with, so a mid-epoch checkpoint refuses another count.
        """
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"checkpoint was made with seed {state['seed']}, this data module has seed {self.seed}")
        epoch, done = int(state.get("epoch", -1)), int(state.get("batches_done", 0))
        if epoch < 0:
            return
        workers = state.get("num_workers")
        mid_epoch = done > 0 and not state.get("epoch_complete", False)
        if mid_epoch and workers is not None and max(1, int(workers)) != max(1, self.num_workers):
            raise ValueError(
                f"checkpoint was taken in the middle of epoch {epoch} with num_workers={workers}; the rest of that "
                f"epoch can only be delivered exactly with the same count (this data module has num_workers="
                f"{self.num_workers}): resume with num_workers={workers}, or from an epoch-end checkpoint"
            )
        self._position = (epoch, done)
        self._resume = (epoch + 1, 0) if state.get("epoch_complete", False) else (epoch, done)
        if "train" in self.streams:
            self.streams["train"].control.set_resume(*self._resume)
