"""Map-style access for plain PyTorch users: a dataset over shard members by global id, and
a sampler over the ids the snapshot keeps."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler
from webdataset.autodecode import Decoder, imagehandler

from .epoch import epoch_rng, multiplicity
from .permutation import KeyedPermutation
from .shards import ShardIndex, ShardSpec, load_index
from .remote import require_local
from .snapshot import CurationSnapshot
from .tario import MemberReader


class ShardDataset(Dataset):
    """``dataset[id]`` → the decoded sample of global id ``id`` (random access by byte offset;
    local, uncompressed shards). ``fields`` picks what an item holds, as in CuratedStream."""

    def __init__(
        self,
        shards: ShardSpec | ShardIndex,
        fields: Sequence[str] = ("png", "cls"),
        decode: Sequence[str | Callable] = ("torchrgb",),
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        self.index = load_index(shards)
        require_local(self.index.urls)
        self.fields = [tuple(f.split(";")) for f in fields]
        self.decoder = Decoder([imagehandler(h) if isinstance(h, str) else h for h in decode])
        self.transform = transform
        self._reader: MemberReader | None = None  # opened lazily, once per worker

    def __len__(self) -> int:
        return self.index.num_samples

    def __getitem__(self, sid: int) -> tuple:
        if self._reader is None:
            self._reader = MemberReader()
        shard, pos = self.index.locate(np.asarray([sid]))
        shard, pos = int(shard[0]), int(pos[0])
        sample = self.decoder(self._reader.read(self.index.urls[shard], self.index.layout(shard), pos))
        if self.transform is not None:
            sample = self.transform(sample)
        values: list[Any] = []
        for alternatives in self.fields:
            found = next((a for a in alternatives if a in sample), None)
            if found is None:
                raise KeyError(f"{self.index.urls[shard]} (sample {sample['__key__']!r}): missing field {';'.join(alternatives)!r}")
            values.append(sample[found])
        return (*values, sid)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}


class KeptSampler(Sampler[int]):
    """Ids the snapshot keeps, shuffled per (seed, epoch), split across ranks.

    With ``resample`` each kept id appears ``round(weight)`` times (stochastically). Ranks get
    equal counts: the id list is padded by wrapping around, as DistributedSampler does.
    Call :meth:`set_epoch` each epoch; the snapshot is read when iteration starts.
    """

    def __init__(
        self,
        snapshot: CurationSnapshot,
        *,
        shuffle: bool = True,
        seed: int = 0,
        resample: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.snapshot = snapshot
        self.shuffle = shuffle
        self.seed = seed
        self.resample = resample
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _ids(self) -> np.ndarray:
        mult = multiplicity(self.snapshot.view(), self.seed, self.epoch, self.resample)
        total = mult.total()  # the kept ids, repeated as read, wrapped to a multiple of the world size
        positions = np.arange(self.rank, self._per_rank(total) * self.world_size, self.world_size) % max(total, 1)
        if self.shuffle:
            positions = KeyedPermutation.seeded(total, epoch_rng(self.seed, self.epoch, 7))(positions)
        return mult.ids_at(positions)

    def _per_rank(self, total: int) -> int:
        return math.ceil(total / self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids().tolist())

    def __len__(self) -> int:
        return self._per_rank(multiplicity(self.snapshot.view(), self.seed, self.epoch, self.resample).total())
