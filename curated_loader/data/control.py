"""A small shared-memory block the main process uses to steer its loader workers."""

from __future__ import annotations

import numpy as np
import torch

from .errors import SkipKind

MAX_WORKERS = 64
_EPOCH, _RESUME_EPOCH, _RESUME_BATCHES = range(3)


class LoaderControl:
    """Current epoch, a pending mid-epoch resume, and per-worker skip and I/O counters.

    Created before the workers start; the main process writes the epoch (and a resume
    point) before each epoch's iterator starts, workers only read those. Each worker
    writes only its own row of the counters, so no two processes write one cell.
    """

    def __init__(self) -> None:
        self._state = torch.tensor([0, -1, 0], dtype=torch.int64).share_memory_()
        self._skips = torch.zeros(MAX_WORKERS + 1, len(SkipKind), dtype=torch.int64).share_memory_()
        self._io = torch.zeros(MAX_WORKERS + 1, 2, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._state[_EPOCH])

    def start_epoch(self, epoch: int) -> None:
        """Main process, before the epoch's iterator starts: set the epoch, clear counters."""
        self._state[_EPOCH] = int(epoch)
        self._skips.zero_()
        self._io.zero_()

    def set_resume(self, epoch: int, batches_done: int) -> None:
        """The next iterator for ``epoch`` skips the ``batches_done`` batches already delivered."""
        self._state[_RESUME_EPOCH] = int(epoch)
        self._state[_RESUME_BATCHES] = int(batches_done)

    def resume_batches(self, epoch: int) -> int:
        return int(self._state[_RESUME_BATCHES]) if int(self._state[_RESUME_EPOCH]) == epoch else 0

    def count_skip(self, worker: int, kind: SkipKind, n: int = 1) -> None:
        self._skips[min(worker, MAX_WORKERS), int(kind)] += n

    def skip_counts(self) -> dict[str, int]:
        """Skips this epoch so far, summed over workers, by kind."""
        totals: np.ndarray = self._skips.sum(dim=0).numpy()
        return {kind.name.lower(): int(totals[kind]) for kind in SkipKind}

    def count_io(self, worker: int, members: int, nbytes: int) -> None:
        row = self._io[min(worker, MAX_WORKERS)]
        row[0] += members
        row[1] += nbytes

    def io_counts(self) -> dict[str, int]:
        """Tar members and data bytes read this epoch so far, summed over workers."""
        members, nbytes = self._io.sum(dim=0).tolist()
        return {"members": int(members), "bytes": int(nbytes)}
