"""The curated selection as a stage for a user's own webdataset pipeline.

    dataset = wds.WebDataset(urls, shardshuffle=False).compose(CurateStage(urls)).decode("torchrgb")

Place it right after the tar reader (before any shuffle or decode): it numbers the samples of
each shard as they stream by, drops the ones the snapshot does not keep, so they are never
decoded, and tags the rest with ``__id__``, ``__weight__`` and ``__strength__``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from .epoch import multiplicity
from .errors import ShardError
from .shards import ShardIndex, ShardSpec, load_index
from .snapshot import CurationSnapshot
from .tario import local_path


def _url_key(url: str) -> str:
    path = local_path(url)
    return os.path.abspath(path) if path is not None else url


class CurateStage:
    """A picklable webdataset stage: stable ids, select by ``snapshot.keep`` before decode.

    The snapshot is read once each time the stage's iterator starts (every epoch, in every
    worker). With ``resample`` a kept sample is repeated ``round(weight)`` times
    (stochastically, per ``seed`` and ``epoch``) and tagged with weight 1. ``allow_pipe``: as
    for :func:`load_index`.
    """

    def __init__(
        self, shards: ShardSpec | ShardIndex, snapshot: CurationSnapshot | None = None, *, resample: bool = False, seed: int = 0,
        allow_pipe: bool | None = None,
    ) -> None:
        self.index = load_index(shards, allow_pipe=allow_pipe)
        self.snapshot = snapshot or CurationSnapshot(self.index.num_samples)
        self.resample = resample
        self.seed = seed
        self.epoch = 0
        self._shard_of = {_url_key(url): i for i, url in enumerate(self.index.urls)}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        view = self.snapshot.view()
        mult = multiplicity(view, self.seed, self.epoch, self.resample)
        current_url, shard, position, counts = None, -1, 0, np.zeros(0, np.int32)
        for sample in samples:
            url = sample["__url__"]
            if url != current_url:
                current_url, position = url, 0
                shard = self._shard_of.get(_url_key(url), -1)
                if shard < 0:
                    raise ShardError(url, "shard is not in the curated index: give CurateStage the same shard list")
                counts = mult[self.index.offsets[shard] : self.index.offsets[shard + 1]]
            if position >= self.index.counts[shard]:
                raise ShardError(url, f"the index says {self.index.counts[shard]} samples, the shard holds more: rebuild the index", key=sample.get("__key__"))
            sid = int(self.index.offsets[shard]) + position
            repeats = int(counts[position])
            position += 1
            for repeat in range(repeats):
                weight = 1.0 if self.resample else float(view.weight[sid])
                yield dict(sample, __id__=sid, __repeat__=repeat, __weight__=weight, __strength__=float(view.strength[sid]))
