"""A ledger sharded across ranks: each rank keeps the rows of the ids it owns.

Rank ``r`` of ``world`` owns the contiguous id range ``[lo, hi)`` with
``lo = r * ceil(N / world)``. Its table is a :class:`~curated_loader.curation.ledger.Ledger`
of ``hi - lo`` rows (plus one scratch row), so per-rank memory is the dense ledger's bytes per
sample times ``N / world`` plus the rank's buffered records of the current epoch.

:meth:`ShardedLedger.record` computes every entry's feature row once (the Ledger's own code),
folds the entries of owned ids into the local table (the others go to the scratch row) and
appends every entry (global id, kind, feature row) to a device-side buffer; telling owned from
other entries there would need a host sync, so owned entries are dropped at the exchange.
:meth:`ShardedLedger.sync`, at epoch end on every rank, exchanges the buffered entries with one
small ``all_to_all_single`` (the counts) and one ``all_to_all_single`` (the rows); each owner
folds what it received with the same accumulating scatter.

Order of folding, per id and epoch: the owner's own records as they came (call by call), then
each other rank's records in rank order, each rank's entries of the epoch as *one* call. Sums,
counts, last values and forgetting transitions are therefore those of a dense ledger fed in
that order; the EMA is updated once per (id, sending rank, epoch) with the mean of that rank's
losses for the id, which is the dense result whenever a rank records an id at most once per
epoch (as the loader arranges). Records without logits are folded after those with logits
of the same sender. Call :meth:`sync` before :meth:`set_epoch` of the next epoch.

:meth:`ShardedLedger.stats` returns the owner's slice only (:class:`OwnedStats`, rows
``[offset, offset + num_samples)``). A :class:`~curated_loader.curation.plan.CurationPlan`
decides over it: each owner decides its slice, global quantities come from small
collectives (:mod:`curated_loader.curation.reducer`) and the decision is all-gathered in the
snapshot's compact format, so every rank gets the dense plan's decision (docs/scale.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from .ledger import Ledger, LedgerStats, _Workspace, _world_size, nearest_rank
from .reducer import GroupReducer, Reducer

# Dense below this many samples (and always on one process); see make_ledger.
AUTO_SHARD_MIN_SAMPLES = 10_000_000
# Received records are folded in chunks of about this many entries (~330 B of workspace each).
DEFAULT_FOLD_CHUNK = 1 << 19
LedgerMode = Literal["dense", "sharded", "auto"]

_ID_COLUMNS = 2  # the int64 id as two float32 bit patterns
_KIND = _ID_COLUMNS  # column of the entry kind
_FEATS = _KIND + 1  # first feature column
_LOGITS, _LOSS_TARGETS, _LOSS_ONLY = 0, 1, 2  # entry kinds


@dataclass(frozen=True)
class OwnedStats(LedgerStats):
    """The statistics of one rank's slice: row ``i`` is sample id ``offset + i``;
    ``total_samples`` is the ledger's N. The tensors cover the slice (``num_samples`` is its
    length); ``num_seen`` / ``num_with_logits`` / ``all_seen`` count *all* ranks' ids, so a
    policy's branches agree on every rank. Global quantities come from :attr:`reducer`
    (collectives over ``process_group``); :meth:`quantile` is exact (see
    :class:`~curated_loader.curation.reducer.GroupReducer`)."""

    offset: int = 0
    total_samples: int = 0
    process_group: Any = None

    @property
    def all_seen(self) -> bool:
        return self.num_seen == self.total_samples

    @property
    def reducer(self) -> Reducer:
        world = _world_size(self.process_group)
        if world == 1:
            return Reducer(self.total_samples)
        ranges = [owned_range(self.total_samples, r, world) for r in range(world)]
        return GroupReducer(self.total_samples, self.offset, ranges, self.process_group)

    def quantile(self, values: torch.Tensor, q: float, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The ``q`` quantile (nearest rank) of ``values`` over ``mask`` (default: seen
        samples) across all ranks: equal to the dense ledger's. A collective."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must lie in [0, 1], got {q}")
        reducer = self.reducer
        if mask is None or mask is self.seen:
            mask, n = self.seen, self.num_seen
        elif mask is self.has_logits:
            n = self.num_with_logits
        else:
            n = reducer.count(mask)
        if n == 0:
            return torch.tensor(float("nan"), device=values.device)
        return reducer.kth_smallest(values, nearest_rank(q, n), mask)


class _OwnedTable(Ledger):
    """The local rows of a sharded ledger: a Ledger that never folds across ranks itself."""

    def _distributed(self) -> bool:
        return False


def owned_range(num_samples: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)``: the ids rank ``rank`` of ``world`` owns (ranges of ``ceil(N / world)``)."""
    chunk = max(1, math.ceil(num_samples / world))
    lo = min(num_samples, rank * chunk)
    return lo, min(num_samples, lo + chunk)


def _id_runs(sorted_ids: torch.Tensor, size: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` chunks of about ``size`` entries of ``sorted_ids`` that never split the
    entries of one id (a chunk is longer when one id has more than ``size`` entries)."""
    n, start = sorted_ids.numel(), 0
    while start < n:
        end = min(n, start + size)
        if end < n:
            at = sorted_ids[end : end + 1]
            cut = int(torch.searchsorted(sorted_ids, at))
            end = cut if cut > start else int(torch.searchsorted(sorted_ids, at, right=True))
        yield start, end
        start = end


class ShardedLedger:
    """Per-sample statistics for ``num_samples`` ids, each rank holding the rows it owns.

    Same recording API as :class:`Ledger` (``record``, ``set_epoch``, ``sync``, ``stats``);
    ``stats`` returns this rank's slice. ``sync`` (and ``stats``, which syncs) is a collective:
    call it on every rank at epoch end. ``fold_chunk`` bounds the entries folded in one step at
    the exchange (each id's entries stay in one step), and so the fold's working memory.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
        ema: float = 0.9,
        process_group: Any = None,
        fold_chunk: int = DEFAULT_FOLD_CHUNK,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if fold_chunk < 1:
            raise ValueError(f"fold_chunk must be >= 1, got {fold_chunk}")
        self.num_samples = int(num_samples)
        self.fold_chunk = int(fold_chunk)
        self.process_group = process_group
        self.world = _world_size(process_group)
        self.rank = dist.get_rank(process_group) if self.world > 1 else 0
        self.lo, self.hi = owned_range(self.num_samples, self.rank, self.world)
        self._chunk = max(1, math.ceil(self.num_samples / self.world))
        self._owned = _OwnedTable(self.hi - self.lo + 1, num_classes, device, ema)  # + scratch row
        self._scratch = self.hi - self.lo
        ws = _Workspace(self._owned, 1)
        c = self._owned.column
        # the feature rows the fold reads: the sums it adds, the code words, the forgetting threshold
        carried = [*range(c["forget_count"]), *ws.code_rows, ws.threshold]
        self._carried = torch.tensor(carried, device=self.device)
        self._target_column = _FEATS + carried.index(ws.code_rows[0])  # calls without logits: the target
        self._width = _FEATS + len(carried)
        self._buffer = torch.empty(0, self._width, device=self.device)
        self._used = 0

    @property
    def device(self) -> torch.device:
        return self._owned.device

    @property
    def epoch(self) -> int:
        return self._owned.epoch

    @property
    def reducer(self) -> Reducer:
        """Collectives over this ledger's process group and owned ranges."""
        if self.world == 1:
            return Reducer(self.num_samples)
        ranges = [owned_range(self.num_samples, r, self.world) for r in range(self.world)]
        return GroupReducer(self.num_samples, self.lo, ranges, self.process_group)

    @property
    def num_owned(self) -> int:
        return self.hi - self.lo

    @property
    def table_bytes(self) -> int:
        """Bytes of this rank's table (owned rows and the scratch row)."""
        t = self._owned._table
        return t.numel() * t.element_size()

    @property
    def buffer_bytes(self) -> int:
        """Bytes of this rank's record buffer (its allocated capacity; kept across epochs)."""
        return self._buffer.numel() * self._buffer.element_size()

    @property
    def entry_bytes(self) -> int:
        """Bytes of one buffered record (id, kind and the feature rows the fold reads)."""
        return self._width * self._buffer.element_size()

    @property
    def buffered(self) -> int:
        """Entries recorded since the last sync."""
        return self._used

    def set_epoch(self, epoch: int) -> None:
        """The epoch that following :meth:`record` calls belong to."""
        self._owned.set_epoch(epoch)

    # -- recording --------------------------------------------------------------------------
    @torch.no_grad()
    def record(
        self,
        ids: torch.Tensor,
        loss: torch.Tensor,
        logits: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> None:
        """Add one batch (global ``ids``; arguments as :meth:`Ledger.record`): entries of owned
        ids are folded now, every entry is buffered for the exchange. No host sync."""
        owned = self._owned
        entries = owned._entries(ids, loss, logits, targets)
        if entries is None:
            return
        ws, ids, targets = entries
        kind = _LOGITS if logits is not None else (_LOSS_ONLY if targets is None else _LOSS_TARGETS)
        self._append(ids, kind, ws, targets)
        local = ids - self.lo
        in_range = (local >= 0) & (local < self.num_owned)
        owned._fold(ws, torch.where(in_range, local, self._scratch), targets)

    def reserve(self, entries: int) -> None:
        """Make room for ``entries`` buffered records (e.g. this rank's records of one epoch),
        so the buffer is not grown by doubling while recording."""
        if entries > self._buffer.shape[0]:
            grown = torch.empty(entries, self._width, device=self.device)
            grown[: self._used] = self._buffer[: self._used]
            self._buffer = grown

    def _append(self, ids: torch.Tensor, kind: int, ws: _Workspace, targets: torch.Tensor | None) -> None:
        b = ids.numel()
        if self._used + b > self._buffer.shape[0]:
            self.reserve(max(2 * self._buffer.shape[0], self._used + b))
        rows = self._buffer[self._used : self._used + b]
        rows[:, :_ID_COLUMNS] = ids.view(torch.float32).view(b, _ID_COLUMNS)
        rows[:, _KIND] = kind
        rows[:, _FEATS:] = torch.index_select(ws.feats, 0, self._carried).t()
        if kind == _LOSS_TARGETS:  # calls without logits fill their code words at the fold
            assert targets is not None
            rows[:, self._target_column] = targets
        self._used += b

    # -- the exchange -----------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Hand every owner the records of its ids (two ``all_to_all_single`` calls, on every
        rank, when distributed) and fold them in. Raises ``ValueError`` naming an id outside
        ``[0, num_samples)``, on every rank (the others after the counts exchange)."""
        rows = self._buffer[: self._used]
        self._used = 0
        ids = rows[:, :_ID_COLUMNS].contiguous().view(torch.int64).reshape(-1)
        bad = (ids < 0) | (ids >= self.num_samples)
        error = None
        if bool(bad.any()):
            error = f"ledger record has id {int(ids[bad][0])} outside [0, {self.num_samples})"
        if self.world == 1:
            if error:
                raise ValueError(error)
            return
        dest = ids.clamp(0, max(self.num_samples - 1, 0)) // self._chunk
        order = torch.sort(dest, stable=True).indices
        counts = torch.bincount(dest, minlength=self.world)  # on the device: NCCL needs it there
        sizes = counts.tolist()
        start = sum(sizes[: self.rank])
        send = rows.index_select(0, torch.cat([order[:start], order[start + sizes[self.rank] :]]))
        counts[self.rank] = 0  # owned records were folded at record time
        sizes[self.rank] = 0
        if error:  # every rank learns of it from the counts and raises: no rank is left waiting
            counts.fill_(-1)
        received_counts = torch.empty_like(counts)
        dist.all_to_all_single(received_counts, counts, group=self.process_group)
        received_sizes = received_counts.tolist()
        if error or min(received_sizes) < 0:
            raise ValueError(error or f"another rank's ledger record has an id outside [0, {self.num_samples})")
        received = torch.empty(sum(received_sizes), rows.shape[1], device=self.device)
        dist.all_to_all_single(received, send, received_sizes, sizes, group=self.process_group)
        del send
        for sender_rows in received.split(received_sizes):
            self._fold_received(sender_rows)

    def _fold_received(self, received: torch.Tensor) -> None:
        """Fold one sender's exchanged rows (call order) by kind, one call each."""
        if not received.shape[0]:
            return
        owned = self._owned
        kinds = received[:, _KIND]
        for kind in (_LOGITS, _LOSS_TARGETS, _LOSS_ONLY):
            mask = kinds == kind
            part = received if bool(mask.all()) else received[mask]  # one kind (usual): no copy
            ids, order = torch.sort(part[:, :_ID_COLUMNS].contiguous().view(torch.int64).reshape(-1), stable=True)
            for start, end in _id_runs(ids, self.fold_chunk):  # a call's workspace per chunk, not per epoch
                rows = part.index_select(0, order[start:end])
                ws = _Workspace(owned, end - start)  # one-off size: not kept among the record workspaces
                ws.mode = "logits" if kind == _LOGITS else "loss"
                ws.feats.index_copy_(0, self._carried, rows[:, _FEATS:].t())
                targets = ws.feats[ws.code_rows[0]].to(torch.long) if kind == _LOSS_TARGETS else None
                owned._fold(ws, ids[start:end] - self.lo, targets)

    # -- statistics -------------------------------------------------------------------------
    @torch.no_grad()
    def stats(self, sync: bool = True) -> OwnedStats:
        """This rank's slice: rows ``[lo, hi)`` as :class:`OwnedStats` with ``offset = lo``
        (its seen counts are global: one ``all_reduce`` of two numbers, on every rank).
        With ``sync=True`` (default) the exchange runs first (a collective)."""
        if sync:
            self.sync()
        full = self._owned.stats(sync=False)
        n = self.num_owned
        values = {
            f.name: (v[:n] if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(LedgerStats)
            for v in (getattr(full, f.name),)
        }
        counts = torch.stack([values["seen"].sum(), values["has_logits"].sum()])
        if self.world > 1:
            dist.all_reduce(counts, group=self.process_group)
        values["num_seen"], values["num_with_logits"] = counts.tolist()
        return OwnedStats(**values, offset=self.lo, total_samples=self.num_samples, process_group=self.process_group)

    def table(self, name: str) -> torch.Tensor:
        """Column ``name`` (as :meth:`Ledger.table`) of the owned rows ``[lo, hi)``."""
        return self._owned.table(name)[: self.num_owned]

    @property
    def table_names(self) -> tuple[str, ...]:
        return self._owned.table_names


def make_ledger(
    num_samples: int,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    ema: float = 0.9,
    process_group: Any = None,
    mode: LedgerMode = "auto",
) -> Ledger | ShardedLedger:
    """A dense :class:`Ledger` or a :class:`ShardedLedger`.

    ``mode="auto"`` shards when ``torch.distributed`` runs with more than one rank and
    ``num_samples >= AUTO_SHARD_MIN_SAMPLES`` (10**7: 480 MB per rank dense), dense otherwise.
    """
    if mode not in ("dense", "sharded", "auto"):
        raise ValueError(f"ledger mode must be 'dense', 'sharded' or 'auto', got {mode!r}")
    if mode == "auto":
        big = num_samples >= AUTO_SHARD_MIN_SAMPLES
        mode = "sharded" if big and _world_size(process_group) > 1 else "dense"
    cls = ShardedLedger if mode == "sharded" else Ledger
    return cls(num_samples, num_classes, device, ema, process_group)
