"""A ledger sharded across ranks: each rank keeps the rows of the ids it owns.

Rank ``r`` of ``world`` owns the contiguous id range ``[lo, hi)`` with
``lo = r * ceil(N / world)``. Its table is a :class:`~curated_loader.curation.ledger.Ledger`
of ``hi - lo`` rows (plus one scratch row). Per-rank memory is the table (48 B per owned id with up to 127 classes), the epoch's buffered
records (40 B each) and a working set bounded by the settings, not by N.

:meth:`ShardedLedger.record` computes every entry's feature row once (the Ledger's own code),
folds the entries of owned ids into the local table (the others go to the scratch row) and
appends the entries of other ranks' ids (global id, kind, feature row) to a device-side buffer
of fixed-size blocks (``buffer_block`` records each: the buffer grows a block at a time, never
by doubling and never by copying; :meth:`ShardedLedger.reserve` allocates the blocks up front).
On the CPU, where reading which entries are owned costs no device sync, only those are
buffered (about half of a rank's records with 2 ranks); on other devices every entry is
(telling them apart would need a host sync) and the exchange skips the owned ones.

:meth:`ShardedLedger.sync`, at epoch end on every rank, exchanges the buffered entries in
*rounds*, each round a range of id buckets of every owner's range (``exchange_buckets``
buckets per owner): one pass over the buffer notes each entry's bucket (2 bytes per entry) and
counts the entries per (owner, bucket); one ``all_gather`` of these counts tells every rank
every round's sizes; each round is then one ``all_to_all_single`` carrying at most about
``exchange_round`` entries to each owner (more only when one bucket alone holds more), and the
owner folds what it received before the next round starts. So an epoch costs
``1 + ceil(received / exchange_round)`` collectives (about; ``last_exchange_rounds`` says how
many rounds ran), and the exchange's working set is about ``exchange_round`` entries sent,
the same received, and the fold's workspace (``fold_chunk`` entries) — no full copy of the
buffer. All entries of one id fall into one round, so rounds do not change the fold. The owner
sorts each sender's ids of a round once and folds them in id order through one workspace per
sync; when no id repeats among them the scatter is a plain ``index_add_`` (the same sums).

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

:meth:`ShardedLedger.state_dict` is a collective: it syncs, then gathers the owned slices to
rank 0 in chunks of ``checkpoint_chunk`` ids, as the *dense* ledger's state (the columns of
:meth:`Ledger.state_dict` over all N ids, on the CPU): rank 0 holds the whole state (57 bytes
per sample of N with up to 127 classes), the other ranks the settings only (Lightning saves
rank 0's). :meth:`ShardedLedger.load_state_dict` takes its slice of such a state, so a
checkpoint resumes on another world size, in a dense :class:`Ledger`, and a dense ledger's
checkpoint resumes sharded.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from .lazy import Deferred
from .ledger import Ledger, LedgerStats, _Workspace, _world_size, nearest_rank
from .reducer import GroupReducer, Reducer

# Dense below this many samples (and always on one process); see make_ledger.
AUTO_SHARD_MIN_SAMPLES = 10_000_000
# Received records are folded in chunks of about this many entries (~330 B of workspace each).
DEFAULT_FOLD_CHUNK = 1 << 17
# An owner receives about this many records (40 B each) per exchange round.
DEFAULT_EXCHANGE_ROUND = 1 << 22
# Id buckets per owner range that exchange rounds are made of (counted per sender at sync).
DEFAULT_EXCHANGE_BUCKETS = 1024
# The fold orders a sender's distinct ids by a counting sort when they span at most this many ids per record.
_COUNTING_SPAN = 4
_MAX_BUCKETS = 1 << 15  # buckets per owner (exchange codes are int16 while world × buckets fits)
# Records per buffer block (40 MiB with up to 127 classes): the buffer grows a block at a time.
DEFAULT_BUFFER_BLOCK = 1 << 20
# Ids per rank gathered to rank 0 in one step of state_dict (57 B each with up to 127 classes).
DEFAULT_CHECKPOINT_CHUNK = 1 << 20
LedgerMode = Literal["dense", "sharded", "auto"]

_ID_COLUMNS = 2  # the int64 id as two float32 bit patterns
_KIND = _ID_COLUMNS  # column of the entry kind
_FEATS = _KIND + 1  # first feature column
_LOGITS, _LOSS_TARGETS, _LOSS_ONLY = 0, 1, 2  # entry kinds
_LOW_WORD = 0 if sys.byteorder == "little" else 1  # id column of the low 32 bits
# Exchanged rows drop the id's high word and the kind column: ``[local id * 4 + kind, feature
# rows]`` (32 B with up to 127 classes) while an owner's range has at most this many ids (and N
# fits int32); otherwise they are the buffered rows as they are.
_COMPACT_MAX_IDS = 1 << 29
_KIND_BITS = 2


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
        return owner_reducer(self.total_samples, self.offset, self.process_group)

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
        everywhere = n == self.total_samples  # the mask holds on every row of every rank: no masked copy
        return reducer.kth_smallest(values, nearest_rank(q, n), None if everywhere else mask)


def _owned_rows(value: Any, n: int) -> Any:
    """The first ``n`` rows of a statistic of the owned table (without its scratch row); a
    statistic not computed yet stays deferred, so reading the slice computes only what a plan
    reads (the Ledger still computes it before the table next changes)."""
    if isinstance(value, Deferred):
        return Deferred(lambda: value.value()[:n], recomputable=value.recomputable, depends=(value,))
    return value[:n] if isinstance(value, torch.Tensor) else value


class _OwnedTable(Ledger):
    """The local rows of a sharded ledger: a Ledger that never folds across ranks itself."""

    def _distributed(self) -> bool:
        return False


def owned_range(num_samples: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)``: the ids rank ``rank`` of ``world`` owns (ranges of ``ceil(N / world)``)."""
    chunk = max(1, math.ceil(num_samples / world))
    lo = min(num_samples, rank * chunk)
    return lo, min(num_samples, lo + chunk)


def owner_reducer(num_samples: int, offset: int, process_group: Any = None) -> Reducer:
    """The reducer of the rank whose slice starts at ``offset``, ranks owning the ranges of
    :func:`owned_range` (the identity on one process)."""
    world = _world_size(process_group)
    if world == 1:
        return Reducer(num_samples)
    ranges = [owned_range(num_samples, r, world) for r in range(world)]
    return GroupReducer(num_samples, offset, ranges, process_group)


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


def _runs(rows: list[int]) -> list[tuple[int, int, int]]:
    """``rows`` as runs of consecutive values: ``(first value, length, position in rows)``."""
    runs: list[tuple[int, int, int]] = []
    for at, row in enumerate(rows):
        if runs and runs[-1][0] + runs[-1][1] == row:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, runs[-1][2])
        else:
            runs.append((row, 1, at))
    return runs


def _entry_ids(part: torch.Tensor) -> torch.Tensor:
    """The int64 ids of buffered entries ``part`` (rows of the buffer's layout): a strided view
    when the row width is even, a copy otherwise."""
    if part.shape[1] % 2 == 0:
        return part.view(torch.int64)[:, 0]
    return part[:, :_ID_COLUMNS].contiguous().view(torch.int64).reshape(-1)


def _take(source: torch.Tensor, picked: torch.Tensor | None, out: torch.Tensor) -> None:
    """``source[picked]`` into ``out``; ``picked=None``: all of ``source`` (a copy, no positions)."""
    if picked is None:
        out.copy_(source)
    else:
        torch.index_select(source, 0, picked, out=out)


class _Scratch:
    """Buffers by name, kept and reused call after call (e.g. round after round of one sync):
    fresh memory costs a page fault per 4 KiB at its first touch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``n`` elements of buffer ``name`` (uninitialised; valid until ``name`` is taken again)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < n:
            buffer = self._buffers[name] = torch.empty(n, dtype=dtype, device=self.device)
        return buffer[:n]

    def arange(self, name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``0, 1, ..., n - 1`` from buffer ``name``, computed when the buffer grows only (read
        it, do not write it)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < n:
            buffer = self._buffers[name] = torch.arange(n, dtype=dtype, device=self.device)
        return buffer[:n]

    def nonzero(self, name: str, mask: torch.Tensor) -> torch.Tensor:
        """``mask.nonzero().squeeze(1)`` written into buffer ``name`` (grown as needed)."""
        out = self._buffers.get(name)
        if out is None or out.dtype != torch.int64:
            out = self._buffers[name] = torch.empty(0, dtype=torch.int64, device=self.device)
        torch.nonzero(mask, out=out.resize_(0))  # an empty out is resized in its own storage while that holds it
        return out.squeeze(1)


def _sorted_ids(ids: torch.Tensor, scratch: _Scratch | None = None) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """``ids`` (int32 or int64, >= 0) in stable order, the order (``None`` when ``ids`` is
    sorted already: no sort, no gather) and whether no id repeats. With ``scratch`` the
    temporaries and the results are its buffers (valid until its next use).

    Distinct ids over a range of at most ``_COUNTING_SPAN`` × their number are ordered by a
    counting sort (each id's position scattered into a slot per id of the range, then the
    filled slots in id order); distinct ids have one order, so this is the stable one. Other
    ids, or ids found to repeat, are sorted by ``torch.sort(stable=True)``."""
    n = ids.numel()
    if n < 2:
        return ids, None, True
    scratch = scratch or _Scratch(ids.device)
    if not bool(torch.lt(ids[1:], ids[:-1], out=scratch.take("flags", n - 1, torch.bool)).any()):
        return ids, None, not bool(torch.eq(ids[1:], ids[:-1], out=scratch.take("flags", n - 1, torch.bool)).any())
    low, high = (int(v) for v in torch.aminmax(ids))
    span = high - low + 1
    if span <= _COUNTING_SPAN * n and n < 1 << 31:
        slot = scratch.take("slot", span, torch.int32).fill_(-1)
        at = scratch.take("at", n, torch.int64).copy_(ids).sub_(low)  # in int64 (no int32 result copied over)
        slot.scatter_(0, at, scratch.arange("positions", n, torch.int32))
        filled = scratch.nonzero("filled", torch.ge(slot, 0, out=scratch.take("flags", span, torch.bool)))
        if filled.numel() == n:  # no id repeats (a repeated id fills one slot)
            order = torch.index_select(slot, 0, filled, out=scratch.take("order", n, torch.int32))
            return filled.add_(low), order, True
    ordered, order = torch.sort(ids, stable=True)
    return ordered, order, not bool((ordered[1:] == ordered[:-1]).any())


def _minor_faults() -> int:
    """Minor page faults of this process so far (each a first touch of fresh memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _PhaseClock:
    """Host wall seconds (``seconds``), the calling thread's CPU seconds (``cpu_seconds``:
    what a phase costs whatever else the machine runs) and the process's minor page faults
    (``faults``) per named phase, lap by lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.faults: dict[str, int] = {}
        self._last, self._last_cpu, self._last_faults = time.perf_counter(), time.thread_time(), _minor_faults()

    def lap(self, phase: str) -> None:
        """Charge the time and faults since the previous lap to ``phase``."""
        now, cpu, faults = time.perf_counter(), time.thread_time(), _minor_faults()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self.cpu_seconds[phase] = self.cpu_seconds.get(phase, 0.0) + cpu - self._last_cpu
        self.faults[phase] = self.faults.get(phase, 0) + faults - self._last_faults
        self._last, self._last_cpu, self._last_faults = now, cpu, faults


def _round_bounds(received: torch.Tensor, limit: int) -> list[int]:
    """Bucket boundaries ``[0, b1, ..., B]`` of the exchange rounds: consecutive buckets while
    no owner would receive more than ``limit`` entries in the round (a bucket above ``limit``
    makes a round alone). ``received`` is ``[owner, bucket]``; no rounds when it is all zero."""
    if not bool(received.any()):
        return []
    bounds, load = [0], [0] * received.shape[0]
    for b, column in enumerate(received.t().tolist()):
        if b > bounds[-1] and any(column) and any(x + y > limit for x, y in zip(load, column)):
            bounds.append(b)
            load = [0] * len(load)
        load = [x + y for x, y in zip(load, column)]
    return [*bounds, received.shape[1]]


class ShardedLedger:
    """Per-sample statistics for ``num_samples`` ids, each rank holding the rows it owns.

    Same recording API as :class:`Ledger` (``record``, ``set_epoch``, ``sync``, ``stats``,
    ``state_dict``, ``load_state_dict``); ``stats`` returns this rank's slice. ``sync`` (and
    ``stats`` and ``state_dict``, which sync) is a collective: call it on every rank.
    ``fold_chunk`` bounds the entries folded in one step at the exchange (each id's entries
    stay in one step), ``exchange_round`` the entries an owner receives per exchange round
    (each bucket's entries stay in one round), ``buffer_block`` the records per buffer block,
    ``checkpoint_chunk`` the ids per rank gathered in one step of :meth:`state_dict`.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
        ema: float = 0.9,
        process_group: Any = None,
        fold_chunk: int = DEFAULT_FOLD_CHUNK,
        exchange_round: int = DEFAULT_EXCHANGE_ROUND,
        exchange_buckets: int = DEFAULT_EXCHANGE_BUCKETS,
        buffer_block: int = DEFAULT_BUFFER_BLOCK,
        checkpoint_chunk: int = DEFAULT_CHECKPOINT_CHUNK,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        limits = {"fold_chunk": fold_chunk, "exchange_round": exchange_round, "buffer_block": buffer_block,
                  "checkpoint_chunk": checkpoint_chunk}
        for name, value in limits.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 1 <= exchange_buckets <= _MAX_BUCKETS:
            raise ValueError(f"exchange_buckets must lie in [1, {_MAX_BUCKETS}], got {exchange_buckets}")
        self.num_samples = int(num_samples)
        self.fold_chunk = int(fold_chunk)
        self.exchange_round = int(exchange_round)
        self.checkpoint_chunk = int(checkpoint_chunk)
        self.process_group = process_group
        self.world = _world_size(process_group)
        self.rank = dist.get_rank(process_group) if self.world > 1 else 0
        self.lo, self.hi = owned_range(self.num_samples, self.rank, self.world)
        self._chunk = max(1, math.ceil(self.num_samples / self.world))
        # ids per bucket: the power of two at or above chunk / exchange_buckets (a shift, not a division)
        self._bucket_shift = (math.ceil(self._chunk / exchange_buckets) - 1).bit_length()
        self._buckets = math.ceil(self._chunk / (1 << self._bucket_shift))  # buckets per owner
        # an entry's exchange code: owner * buckets + bucket
        self._code_dtype = torch.int16 if self.world * self._buckets < 1 << 15 else torch.int32
        self._owned = _OwnedTable(self.hi - self.lo + 1, num_classes, device, ema)  # + scratch row
        self._scratch = self.hi - self.lo
        ws = _Workspace(self._owned, 1)
        c = self._owned.column
        # the feature rows the fold reads: the sums it adds, the code words, the forgetting threshold;
        # not the counts (1, and 1 or 0 by the kind of call): the fold sets them
        carried = [*range(c["loss_sum"], c["forget_count"]), *ws.code_rows, ws.threshold]
        self._count_rows = (c["count"], c["logit_count"])
        self._carried = torch.tensor(carried, device=self.device)
        self._carried_runs = _runs(carried)  # (first row, rows, first feature column): contiguous copies at the fold
        self._target_column = _FEATS + carried.index(ws.code_rows[0])  # calls without logits: the target
        self._width = _FEATS + len(carried)
        self._compact = self._chunk <= _COMPACT_MAX_IDS and self.num_samples < 1 << 31
        self._wire_feats = 1 if self._compact else _FEATS  # first feature column of an exchanged row
        self._wire_width = self._width - _FEATS + 1 if self._compact else self._width
        self._fold_ws: _Workspace | None = None  # the fold's workspace, kept for the length of one sync
        self._fold_rows: torch.Tensor | None = None  # received rows of one fold step in id order, idem
        self._block = min(int(buffer_block), max(1, self._chunk))  # no bigger than one rank's share
        self._blocks: list[torch.Tensor] = []
        self._used = 0
        self._last_buffered = 0  # entries the last sync exchanged: what a released buffer reserves again
        self.last_exchange_rounds = 0  # all_to_all rounds of the last sync
        self.last_sync_seconds: dict[str, float] = {}  # host wall time per phase of the last sync
        self.last_sync_cpu_seconds: dict[str, float] = {}  # the calling thread's CPU time, idem
        self.last_sync_faults: dict[str, int] = {}  # the process's minor page faults, idem

    @property
    def device(self) -> torch.device:
        return self._owned.device

    @property
    def epoch(self) -> int:
        return self._owned.epoch

    @property
    def reducer(self) -> Reducer:
        """Collectives over this ledger's process group and owned ranges."""
        return owner_reducer(self.num_samples, self.lo, self.process_group)

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
        """Bytes of this rank's record buffer (its allocated blocks; kept across epochs)."""
        return sum(b.numel() * b.element_size() for b in self._blocks)

    @property
    def entry_bytes(self) -> int:
        """Bytes of one buffered record (id, kind and the feature rows the fold reads)."""
        return self._width * torch.finfo(torch.float32).bits // 8

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
        ids are folded now, the others buffered for the exchange (on devices other than the
        CPU every entry is buffered, so that ``record`` never syncs with the host)."""
        owned = self._owned
        entries = owned._entries(ids, loss, logits, targets)
        if entries is None:
            return
        ws, ids, targets = entries
        kind = _LOGITS if logits is not None else (_LOSS_ONLY if targets is None else _LOSS_TARGETS)
        local = ids - self.lo
        other = (local < 0) | (local >= self.num_owned)
        self._append(ids, kind, ws, targets, self._to_buffer(other))
        owned._fold(ws, torch.where(other, self._scratch, local), targets)

    def reserve(self, entries: int) -> None:
        """Allocate the buffer blocks for ``entries`` records (e.g. this rank's records of one
        epoch) now rather than while recording, in one piece: freed together, they leave one
        free region that the plan's full-length arrays fit in, not blocks too small for them."""
        missing = -(-entries // self._block) - len(self._blocks)
        if missing > 0:
            piece = torch.empty(missing * self._block, self._width, dtype=torch.float32, device=self.device)
            self._blocks.extend(piece.split(self._block))

    def reserve_epoch(self, records: int) -> None:
        """Reserve, in one piece, the buffer of an epoch in which this rank records about
        ``records`` entries, unless blocks are held: on the CPU only records of ids other
        ranks own are buffered (``records`` × their share of the ids), on other devices all.
        An estimate: more records add blocks one at a time."""
        if self._blocks:
            return
        share = 1.0 if self.device.type != "cpu" else (self.num_samples - self.num_owned) / max(self.num_samples, 1)
        self.reserve(math.ceil(max(records, 0) * share))

    def release_buffer(self) -> None:
        """Free the buffer blocks after a :meth:`sync` (e.g. while the plan and the publish
        need the memory); the next record reserves as many as the last sync exchanged, in one
        piece (:meth:`reserve`), and further ones a block at a time."""
        if self._used:
            raise RuntimeError(f"{self._used} records are buffered: sync before releasing the buffer")
        self._blocks = []

    def _to_buffer(self, other: torch.Tensor) -> torch.Tensor | None:
        """The positions of a call's entries to buffer: on the CPU those of ids this rank does
        not own (``other``; reading the mask costs no device sync there), ``None`` (every entry)
        on other devices, where the exchange skips the owned ones (folded at record)."""
        if self.device.type != "cpu":
            return None
        return other.nonzero().squeeze(1)

    def _append(
        self, ids: torch.Tensor, kind: int, ws: _Workspace, targets: torch.Tensor | None, picked: torch.Tensor | None,
    ) -> None:
        """Buffer the entries ``picked`` (positions; ``None``: all) of one call."""
        feats = torch.index_select(ws.feats, 0, self._carried)
        if picked is not None and picked.numel() < ids.numel():
            ids, feats = ids.index_select(0, picked), feats.index_select(1, picked)
            targets = None if targets is None else targets.index_select(0, picked)
        b = ids.numel()
        if not b:
            return
        self.reserve(max(self._used + b, 0 if self._blocks else self._last_buffered))
        id_bits = ids.contiguous().view(torch.float32).view(b, _ID_COLUMNS)  # ids may be a strided slice
        done = 0
        while done < b:  # a call may end one block and start the next
            block, at = divmod(self._used + done, self._block)
            n = min(b - done, self._block - at)
            rows = self._blocks[block][at : at + n]
            rows[:, :_ID_COLUMNS] = id_bits[done : done + n]
            rows[:, _KIND] = kind
            rows[:, _FEATS:] = feats[:, done : done + n].t()
            if kind == _LOSS_TARGETS:  # calls without logits fill their code words at the fold
                assert targets is not None
                rows[:, self._target_column] = targets[done : done + n]
            done += n
        self._used += b

    def _filled(self) -> list[torch.Tensor]:
        """The buffered entries, block by block in call order (views)."""
        full, rest = divmod(self._used, self._block)
        return [*self._blocks[:full], *([self._blocks[full][:rest]] if rest else [])]

    # -- the exchange -----------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Hand every owner the records of its ids and fold them in: one ``all_gather`` of
        per-bucket counts, then one ``all_to_all_single`` per round (on every rank, when
        distributed). Raises ``ValueError`` naming an id outside ``[0, num_samples)``, on every
        rank (the others after the counts exchange). ``last_sync_seconds`` holds the host wall
        time of its phases: ``codes`` (each entry's owner and bucket), ``counts`` (their
        ``all_gather``), ``pack`` (the send tensors), ``all_to_all``, ``sort`` (received ids)
        and ``fold``; ``last_sync_cpu_seconds`` their CPU time, ``last_sync_faults`` their
        minor page faults. A record travels as 32 bytes (with up to 127 classes): its offset in
        the owner's range times 4 plus its kind in one int32 word, then its feature rows (the
        id's high word and the kind column stay home); owner ranges above 2**29 ids, or N from
        2**31, send the buffered rows as they are."""
        parts = self._filled()
        self._last_buffered, self._used = self._used, 0
        self.last_exchange_rounds = 0
        clock = _PhaseClock()
        self.last_sync_seconds, self.last_sync_cpu_seconds, self.last_sync_faults = clock.seconds, clock.cpu_seconds, clock.faults
        scratch = _Scratch(self.device)  # temporaries, reused block after block and round after round
        codes, counts, block_counts, error = self._bucket_codes(parts, scratch)
        clock.lap("codes")
        if self.world == 1:
            if error:
                raise ValueError(error)
            return
        if error:  # every rank learns of it from the counts and raises: no rank is left waiting
            counts.fill_(-1)
        gathered = [torch.empty_like(counts) for _ in range(self.world)]
        dist.all_gather(gathered, counts, group=self.process_group)
        table = torch.stack(gathered).view(self.world, self.world, self._buckets).cpu()  # [sender, owner, bucket]
        clock.lap("counts")
        if error or bool((table < 0).any()):
            raise ValueError(error or f"another rank's ledger record has an id outside [0, {self.num_samples})")
        bounds = _round_bounds(table.sum(0), self.exchange_round)
        self.last_exchange_rounds = max(len(bounds) - 1, 0)
        rounds = [table[:, :, first:last].sum(-1) for first, last in itertools.pairwise(bounds)]  # [sender, owner]
        # one send and one receive tensor for all rounds (first touch of fresh memory costs)
        send = torch.empty(max((int(r[self.rank].sum()) for r in rounds), default=0), self._wire_width, device=self.device)
        receive = torch.empty(max((int(r[:, self.rank].sum()) for r in rounds), default=0), self._wire_width, device=self.device)
        send_ids = torch.empty(send.shape[0] if self._compact else 0, dtype=torch.int32, device=self.device)
        try:
            for (first, last), sizes in zip(itertools.pairwise(bounds), rounds):
                picks = block_counts[:, :, first:last].sum(-1).tolist()  # [block][owner]: the round's entries
                received = self._exchange_round(parts, codes, picks, first, last, sizes, (send, send_ids), receive, clock, scratch)
                for sender_rows in received.split(sizes[:, self.rank].tolist()):
                    self._fold_received(sender_rows, clock, scratch)
        finally:
            self._fold_ws = self._fold_rows = None  # the plan and the publish may need the memory

    def _bucket_codes(
        self, parts: list[torch.Tensor], scratch: _Scratch,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, str | None]:
        """Each entry's exchange code ``owner * buckets + bucket`` and the entries per (owner,
        bucket), but none for this rank's own range (its entries were folded at record time
        and, off the CPU, buffered too: no round picks them); the same per block (``[block,
        owner, bucket]`` on the CPU, own range included: a round skips a block without entries
        in it and copies one whose entries are all in it); the first id out of range, if any."""
        n, chunk, buckets = self.num_samples, self._chunk, self._buckets
        counts = torch.zeros(self.world * buckets, dtype=torch.int64, device=self.device)
        codes, per_block, error = [], [], None
        for part in parts:
            ids, in_range = self._block_ids(part, scratch)
            if error is None and not in_range:
                wide = _entry_ids(part)
                error = f"ledger record has id {int(wide[(wide < 0) | (wide >= n)][0])} outside [0, {n})"
            if error is not None:
                ids = _entry_ids(part).clamp(0, max(n - 1, 0)).to(ids.dtype)
            owner = torch.div(ids, chunk, rounding_mode="floor", out=scratch.take("owner", ids.numel(), ids.dtype))
            code = torch.sub(ids, owner, alpha=chunk, out=scratch.take("code", ids.numel(), ids.dtype))
            code.bitwise_right_shift_(self._bucket_shift)
            code.add_(owner, alpha=buckets)
            per_block.append(torch.bincount(code, minlength=self.world * buckets))
            counts += per_block[-1]
            codes.append(code.to(self._code_dtype))
        counts[self.rank * buckets : (self.rank + 1) * buckets] = 0
        shape = (len(parts), self.world, buckets)
        block_counts = torch.stack(per_block).view(shape).cpu() if parts else torch.zeros(shape, dtype=torch.int64)
        return codes, counts, block_counts, error

    def _block_ids(self, part: torch.Tensor, scratch: _Scratch) -> tuple[torch.Tensor, bool]:
        """The ids of buffered entries ``part`` (contiguous; int32 when N fits it) and whether
        all lie in ``[0, N)``. With int32 ids the check reads the id's two 32-bit words (an id
        in range has a zero high word and a low word in ``[0, N)``), not the int64 ids."""
        n = self.num_samples
        if n < 1 << 31:
            ids = scratch.take("ids", part.shape[0], torch.int32).copy_(part[:, _LOW_WORD].view(torch.int32))
            low, high = (int(v) for v in torch.aminmax(ids))
            return ids, low >= 0 and high < n and not bool(part[:, 1 - _LOW_WORD].view(torch.int32).any())
        ids = _entry_ids(part).contiguous()
        low, high = (int(v) for v in torch.aminmax(ids))
        return ids, low >= 0 and high < n

    def _exchange_round(
        self, parts: list[torch.Tensor], codes: list[torch.Tensor], picks: list[list[int]], first: int, last: int,
        sizes: torch.Tensor, send: tuple[torch.Tensor, torch.Tensor], receive: torch.Tensor, clock: _PhaseClock,
        scratch: _Scratch,
    ) -> torch.Tensor:
        """One round: send every owner this rank's entries in buckets ``[first, last)`` of its
        range (call order within each owner, picked block by block straight into ``send``;
        ``picks[block][owner]`` of them in each block: none, a copy of all or compared codes),
        receive this rank's into ``receive``; the received rows by sender (a view). ``send``
        is the send rows and, for compact rows, a buffer of their ids' low words."""
        send_sizes = sizes[self.rank].tolist()
        received_sizes = sizes[:, self.rank].tolist()
        rows, received = send[0][: sum(send_sizes)], receive[: sum(received_sizes)]
        at = 0
        for owner, count in enumerate(send_sizes):
            if not count:
                continue
            low, high = owner * self._buckets + first, owner * self._buckets + last
            start = at
            for part, code, block_picks in zip(parts, codes, picks):
                taken = block_picks[owner]
                if not taken:
                    continue
                end, picked = at + taken, None  # a whole block: copies, no positions
                if taken < code.numel():
                    inside = torch.ge(code, low, out=scratch.take("inside", code.numel(), torch.bool))
                    inside &= torch.lt(code, high, out=scratch.take("below", code.numel(), torch.bool))
                    picked = scratch.nonzero("picked", inside)
                if self._compact:  # the kind and feature columns; the ids' low words aside
                    _take(part[:, _KIND:], picked, rows[at:end])
                    _take(part[:, _LOW_WORD].view(torch.int32), picked, send[1][at:end])
                else:
                    _take(part, picked, rows[at:end])
                at = end
            if self._compact:
                self._compact_words(rows[start:at], send[1][start:at], owner * self._chunk, scratch)
        clock.lap("pack")
        dist.all_to_all_single(received, rows, received_sizes, send_sizes, group=self.process_group)
        clock.lap("all_to_all")
        return received

    @staticmethod
    def _compact_words(rows: torch.Tensor, ids: torch.Tensor, owner_range_start: int, scratch: _Scratch) -> None:
        """Write each compact row's first word, ``(id - owner_range_start) * 4 + kind``, over its
        kind (column 0); ``ids`` are the rows' int32 ids (overwritten)."""
        word = rows[:, 0].view(torch.int32)
        kind = scratch.take("kinds", rows.shape[0], torch.int32).copy_(rows[:, 0])
        ids.sub_(owner_range_start).bitwise_left_shift_(_KIND_BITS).add_(kind)
        word.copy_(ids)

    def _received_ids(self, part: torch.Tensor, scratch: _Scratch, words: torch.Tensor | None = None) -> torch.Tensor:
        """The local ids (``id - lo``; int32 when N fits it) of received rows ``part``
        (compact rows: from ``words``, their first words, when given)."""
        if self._compact:
            words = part[:, 0].view(torch.int32) if words is None else words
            return torch.bitwise_right_shift(words, _KIND_BITS, out=scratch.take("ids", part.shape[0], torch.int32))
        ids = _entry_ids(part)
        return ids.to(torch.int32).sub_(self.lo) if self.num_samples < 1 << 31 else ids - self.lo

    def _received_kinds(self, received: torch.Tensor, scratch: _Scratch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The kind of each received row (int32 or float) and, for compact rows, their first
        words (a contiguous copy: the rows' column is read once for the kinds and the ids)."""
        if self._compact:
            words = scratch.take("words", received.shape[0], torch.int32).copy_(received[:, 0].view(torch.int32))
            return torch.bitwise_and(words, (1 << _KIND_BITS) - 1, out=scratch.take("kinds", received.shape[0], torch.int32)), words
        return received[:, _KIND], None

    def _fold_received(self, received: torch.Tensor, clock: _PhaseClock, scratch: _Scratch) -> None:
        """Fold one sender's exchanged rows (call order) by kind, one call each: the kind's ids
        sorted once (stable), then folded in id order, ``fold_chunk`` entries at a time. When no
        id repeats (the usual case: the loader hands a rank each id once per epoch) the scatter
        adds without the accumulating index (:meth:`Ledger._fold`'s ``distinct``)."""
        if not received.shape[0]:
            return
        kinds, words = self._received_kinds(received, scratch)
        present = torch.bincount(kinds.to(torch.int32), minlength=3).tolist()
        for kind in (_LOGITS, _LOSS_TARGETS, _LOSS_ONLY):
            if not present[kind]:
                continue
            part = received if present[kind] == received.shape[0] else received[kinds == kind]  # one kind (usual): no copy
            ids = self._received_ids(part, scratch, words if part is received else None)
            local, order, distinct = _sorted_ids(ids, scratch)
            clock.lap("sort")
            ws = self._fold_workspace(min(self.fold_chunk, part.shape[0]))  # fold_chunk entries, not the epoch's
            for start, end in _id_runs(local, self.fold_chunk):
                step = ws if end - start <= ws.feats.shape[1] else _Workspace(self._owned, end - start)  # one id above fold_chunk
                rows = part[start:end] if order is None else self._gathered_rows(part, order[start:end])
                self._fold_sorted(step, rows, kind, local[start:end], distinct)
            clock.lap("fold")

    def _gathered_rows(self, part: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """``part[order]`` into a buffer of ``fold_chunk`` rows kept for the sync (no fresh
        memory per step)."""
        m = order.numel()
        buffer = self._fold_rows
        if buffer is None or buffer.shape[0] < m:
            buffer = self._fold_rows = torch.empty(m, part.shape[1], device=self.device)
        return torch.index_select(part, 0, order, out=buffer[:m])

    def _fold_sorted(self, ws: _Workspace, rows: torch.Tensor, kind: int, ids: torch.Tensor, distinct: bool) -> None:
        """Fold the entries ``rows`` (id order, local ids ``ids``) as one call of ``kind``
        through workspace ``ws``; its entries beyond ``len(ids)`` (left from an earlier step)
        fold into the scratch row."""
        owned, m, feats = self._owned, ids.numel(), self._wire_feats
        mode = "logits" if kind == _LOGITS else "loss"
        for row, length, column in self._carried_runs:  # the carried feature rows, a contiguous copy per run
            ws.permuted[row : row + length, :m].copy_(rows[:, feats + column : feats + column + length].t())
        if ws.mode != mode:  # the counts: 1, and 1 or 0 by the kind (the fold writes neither row)
            count, logit_count = self._count_rows
            ws.permuted[count].fill_(1.0)
            ws.permuted[logit_count].fill_(1.0 if kind == _LOGITS else 0.0)
            ws.mode = mode
        ws.sorted_ids[:m] = ids
        ws.sorted_ids[m:] = self._scratch  # padding: folds (repeatedly) into the scratch row only
        targets = ws.permuted[ws.code_rows[0]].to(torch.long) if kind == _LOSS_TARGETS else None
        owned._fold(ws, ws.sorted_ids, targets, presorted=True, distinct=distinct)

    def _fold_workspace(self, entries: int) -> _Workspace:
        """The sync's fold workspace if it holds ``entries`` and at most twice as many (the
        steps of a small fold then do not pad to a big workspace), else a new one of
        ``entries``, kept for the next steps of this sync."""
        ws = self._fold_ws
        if ws is None or not entries <= ws.feats.shape[1] <= 2 * entries:
            ws = self._fold_ws = _Workspace(self._owned, entries)
        return ws

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
        values = {f.name: _owned_rows(full.__dict__[f.name], n) for f in dataclasses.fields(LedgerStats)}
        counts = torch.stack([torch.count_nonzero(values["seen"]), torch.count_nonzero(values["has_logits"])])
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

    # -- persistence ------------------------------------------------------------------------
    def _rows(self, count: int) -> _OwnedTable:
        """An empty table of ``count`` rows with this ledger's settings (one checkpoint chunk)."""
        return _OwnedTable(count, self._owned.num_classes, self.device, self._owned.ema)

    def _chunks(self) -> Iterator[tuple[int, int]]:
        """``[start, end)`` of the owned rows, one checkpoint chunk each; every rank walks the
        same number of chunks (``ceil(ceil(N / world) / checkpoint_chunk)``), empty ones at its end."""
        for start in range(0, self._chunk, self.checkpoint_chunk):
            yield min(start, self.num_owned), min(start + self.checkpoint_chunk, self.num_owned)

    @torch.no_grad()
    def state_dict(self, dst: int = 0) -> dict[str, Any]:
        """The dense ledger's state (:meth:`Ledger.state_dict` over all N ids, tensors on the
        CPU) on rank ``dst``, gathered chunk by chunk; the settings only (no ``tables``) on the
        other ranks. A collective (it syncs first): call it on every rank."""
        self.sync()
        owned = self._owned
        state: dict[str, Any] = {"num_samples": self.num_samples, "num_classes": owned.num_classes,
                                 "ema": owned.ema, "epoch": owned.epoch}
        if self.world > 1 and self.rank != dst:
            state["tables_on_rank"] = dst
        columns = {name: (t.dtype, t.element_size()) for name, t in self._rows(1).state_dict()["tables"].items()}
        step = self.checkpoint_chunk
        offsets = [0, *itertools.accumulate(-(-step * size // 8) * 8 for _, size in columns.values())]  # 8-byte aligned
        tables = {name: torch.empty(self.num_samples, dtype=dtype) for name, (dtype, _) in columns.items()} if self.rank == dst else {}
        for start, end in self._chunks():
            rows = self._rows(end - start)
            rows._table.copy_(owned._table[:, start:end])
            packed = torch.zeros(offsets[-1], dtype=torch.uint8, device=self.device)
            for at, (name, column) in zip(offsets, rows.state_dict()["tables"].items()):
                raw = column.contiguous().view(torch.uint8)
                packed[at : at + raw.numel()] = raw
            if self.world == 1:
                pieces = [packed]
            else:
                pieces = [torch.empty_like(packed) for _ in range(self.world)] if self.rank == dst else None
                root = dst if self.process_group is None else dist.get_global_rank(self.process_group, dst)
                dist.gather(packed, pieces, dst=root, group=self.process_group)
            for sender, piece in enumerate(pieces or []):
                lo, hi = owned_range(self.num_samples, sender, self.world)
                first, last = min(lo + start, hi), min(lo + start + step, hi)
                for at, (name, (dtype, size)) in zip(offsets, columns.items()):
                    values = piece[at : at + (last - first) * size].view(dtype)
                    tables[name][first:last] = values.cpu()
        if tables:
            state["tables"], state["pending"] = tables, {}
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's slice from a dense state over all N ids: :meth:`state_dict` of
        a :class:`ShardedLedger` (rank ``dst``'s, any world size) or of a :class:`Ledger`.
        Raises ``KeyError`` naming anything missing, ``ValueError`` for another N. Drops the
        records buffered since the last sync. Not a collective."""
        if "num_samples" in state and int(state["num_samples"]) != self.num_samples:
            raise ValueError(f"ledger state has {state['num_samples']} samples, this ledger {self.num_samples}")
        if "tables" not in state and "tables_on_rank" in state:
            raise KeyError(f"ledger state has no tables: the sharded ledger gathered them on rank "
                           f"{state['tables_on_rank']}; load that rank's state")
        owned = self._owned
        owned._settle_stats()  # earlier stats() keep their values: the rows are overwritten in place
        for start, end in self._chunks():
            first, last = self.lo + start, self.lo + end
            part = {key: value for key, value in state.items() if key not in ("tables", "pending")}
            part["num_samples"] = end - start
            for key in ("tables", "pending"):
                if key in state:
                    part[key] = {name: column[first:last] for name, column in (state[key] or {}).items()}
            rows = self._rows(end - start)
            rows.load_state_dict(part)
            owned._table[:, start:end] = rows._table
        owned.epoch = int(state["epoch"])
        owned.ema = float(state.get("ema", owned.ema))
        self._used = 0


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
