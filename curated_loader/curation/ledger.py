"""The ledger: dense per-sample training statistics, kept on the training device.

Storage is three tables with one row per sample id (plus one scratch row, ``N``, that absorbs
writes which must not land anywhere):

* ``acc`` float32 ``[N+1, K]``: the accumulators (count, loss sum, loss² sum, logit count,
  margin sum, gold-probability sum and its square, correct count, forgetting events), each
  declared with its cross-rank reduction (``"sum"``) through :meth:`Ledger._add_column`, in the
  spirit of torchmetrics' ``add_state``;
* ``state`` float32 ``[N+1, S]``: last values (EMA loss, last loss) and one or more packed
  integer *code words* holding the label, the last prediction and whether it was correct, and
  the last epoch recorded (bit fields; the layout depends on the number of classes, see
  :class:`_CodeLayout`). Code words are int32 bit patterns stored in float32 slots
  (``Tensor.view``), so the whole state is one table with one gather and one scatter;
* when ``torch.distributed`` runs with more than one rank, a ``pending`` copy of ``acc``
  holding this rank's records since the last :meth:`Ledger.sync`.

With 10 classes that is 36 + 12 = 48 bytes per sample on one device.

Recording and folding are separate steps. :meth:`Ledger.record` writes into the accumulator
target (``acc`` itself on a single process, ``pending`` when distributed) and into ``state``.
:meth:`Ledger.sync` folds: when distributed it sums the pending rows across ranks into ``acc``
(one all-reduce) and merges ``state`` (one all-reduce of the int32 bit patterns with
``MAX``, where every rank masks the rows it did not record with the lowest int32, so each row
ends with the value of a rank that recorded it) — two collectives per sync whatever K is. A
single process folds nothing. Between two syncs each id is expected to be recorded by one
rank (the loader splits the samples of an epoch disjointly); if two ranks record the same id
in one epoch the state keeps one of their values (an approximation, never a hang). A sharded
ledger (each rank owning an id range) would replace only the fold.

``record`` never leaves the device: no ``.item()``, ``.cpu()``, ``.tolist()``, no boolean
indexing, no ``torch.unique``. Duplicate ids inside one call are resolved with one stable
sort: sums take every entry (one ``index_put_(accumulate=True)``, deterministic on CUDA);
the EMA is updated once per id with the mean of that id's losses in the call; "last" values
and forgetting transitions follow call order; state rows are written once per id (the other
entries of a duplicated id write into the scratch row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

Reduce = Literal["sum", "last"]
_INT32_MIN = torch.iinfo(torch.int32).min
_EPOCH_BITS_MIN = 10  # a one-word layout must leave room for 1022 epochs


@dataclass(frozen=True)
class _Column:
    table: Literal["acc", "state"]
    index: int
    reduce: Reduce


@dataclass(frozen=True)
class _Field:
    """An unsigned bit field ``[shift, shift + bits)`` of code word ``word``; stores value + 1
    (0 means "never recorded")."""

    word: int
    shift: int
    bits: int

    @property
    def limit(self) -> int:
        return (1 << self.bits) - 1  # largest storable value + 1


class _CodeLayout:
    """Where ``correct``, ``label``, ``pred`` and ``epoch`` live in the int32 code words.

    With ``num_classes <= 1023`` one word holds all four (1 + 2·b bits for the classes, the
    rest, at least 10 bits, for the epoch); otherwise (or with unknown classes) two words:
    correct + label (up to 2**30 - 2 classes) and prediction + epoch (16 + 15 bits).
    """

    def __init__(self, num_classes: int | None) -> None:
        b = None if num_classes is None else max(1, int(num_classes).bit_length())
        if b is not None and 1 + 2 * b + _EPOCH_BITS_MIN <= 31:
            self.words = 1
            self.fields = {
                "correct": _Field(0, 0, 1),
                "label": _Field(0, 1, b),
                "pred": _Field(0, 1 + b, b),
                "epoch": _Field(0, 1 + 2 * b, 30 - 2 * b),
            }
        else:
            self.words = 2
            self.fields = {
                "correct": _Field(0, 0, 1),
                "label": _Field(0, 1, 30),
                "pred": _Field(1, 0, 16),
                "epoch": _Field(1, 16, 15),
            }

    def multipliers(self, names: tuple[str, ...], device: torch.device) -> torch.Tensor:
        """int64 ``[len(names), words]``: ``values @ this`` packs (value + 1 offsets added
        separately by :meth:`offsets`)."""
        m = torch.zeros(len(names), self.words, dtype=torch.int64)
        for i, name in enumerate(names):
            f = self.fields[name]
            m[i, f.word] = 1 << f.shift
        return m.to(device)

    def offsets(self, names: tuple[str, ...]) -> list[int]:
        """The ``+1`` of every field in ``names``, per word (``correct`` stores its bit as is)."""
        out = [0] * self.words
        for name in names:
            if name != "correct":
                f = self.fields[name]
                out[f.word] += 1 << f.shift
        return out

    def decode(self, words: torch.Tensor, name: str) -> torch.Tensor:
        """Field ``name`` (value, -1 where never recorded; ``correct`` as stored) from int32
        code words ``[..., words]``."""
        f = self.fields[name]
        raw = (words[..., f.word].to(torch.int64) >> f.shift) & ((1 << f.bits) - 1)
        return raw if name == "correct" else raw - 1


def _world_size(group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 1 else x.reshape(-1)


_ACC = (
    "count",
    "logit_count",
    "loss_sum",
    "gold_prob_sum",
    "loss_sq_sum",
    "gold_prob_sq_sum",
    "margin_sum",
    "correct_count",
    "forget_count",
)
_STATE = ("ema_loss", "last_loss")
_CODE_NAMES = {"label": "label", "last_pred": "pred", "last_epoch": "epoch", "last_correct": "correct"}


@dataclass(frozen=True)
class LedgerStats:
    """Read-only derived per-sample statistics (tensors of length N on the ledger's device).

    Means are over all recorded observations; ``aum``, ``confidence``, ``variability``,
    ``correct_frac`` are over observations recorded with logits. Unseen entries hold 0.
    """

    epoch: int
    num_seen: int
    num_with_logits: int
    seen: torch.Tensor  # bool: recorded at least once
    has_logits: torch.Tensor  # bool: recorded at least once with logits
    count: torch.Tensor  # int32
    mean_loss: torch.Tensor
    loss_var: torch.Tensor
    ema_loss: torch.Tensor
    last_loss: torch.Tensor
    aum: torch.Tensor  # mean margin: assigned-label logit minus largest other logit
    confidence: torch.Tensor  # mean probability of the assigned label
    variability: torch.Tensor  # std of that probability
    correct_frac: torch.Tensor
    forgetting: torch.Tensor  # int32: correct -> incorrect transitions
    last_epoch: torch.Tensor  # int32: last epoch recorded, -1 never
    labels: torch.Tensor  # int64: last recorded target, -1 unknown

    @property
    def num_samples(self) -> int:
        return int(self.seen.shape[0])

    @property
    def device(self) -> torch.device:
        return self.seen.device

    @property
    def all_seen(self) -> bool:
        return self.num_seen == self.num_samples

    def quantile(self, values: torch.Tensor, q: float, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The ``q`` quantile (nearest rank) of ``values`` over ``mask`` (default: seen samples).

        Returns a 0-dim tensor; ``nan`` when the mask is empty. Costs one host sync and a
        linear-time selection (no full sort).
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must lie in [0, 1], got {q}")
        if mask is None or mask is self.seen:
            mask, n = self.seen, self.num_seen
        elif mask is self.has_logits:
            n = self.num_with_logits
        else:
            n = int(mask.sum())
        if n == 0:
            return torch.tensor(float("nan"), device=values.device)
        subset = values if n == values.numel() else values[mask]
        k = min(n, max(1, int(round(q * (n - 1))) + 1))
        return torch.kthvalue(subset.float(), k).values


def _variance(mean_square: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``mean_square - mean**2`` clamped at 0, computed in place into ``mean_square``."""
    return mean_square.addcmul_(mean, mean, value=-1).clamp_min_(0)


class _BatchConstants:
    """Per-batch-size constants and scratch, made once and reused by every ``record``."""

    def __init__(self, b: int, device: torch.device) -> None:
        self.flags = torch.ones(b + 1, dtype=torch.bool, device=device)
        self.inner = self.flags[1:b]  # ids[j] != ids[j-1], written by each call
        self.first = self.flags[:b]  # first entry of its id (in sorted order)
        self.last = self.flags[1:]  # last entry of its id
        self.ones = torch.ones(b, 2, device=device)
        self.zeros = torch.zeros(b, 7, device=device)


class Ledger:
    """Per-sample loss, margin and correctness history for ``num_samples`` ids.

    Call :meth:`record` from the training step, :meth:`set_epoch` at epoch start and
    :meth:`sync` (or :meth:`stats`, which syncs) at epoch end on every rank.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
        ema: float = 0.9,
        process_group: Any = None,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {ema}")
        self.num_samples = int(num_samples)
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.ema = float(ema)
        self.epoch = 0
        self.process_group = process_group
        self.layout = _CodeLayout(num_classes)
        self._dirty = False  # records since the last sync (host-side flag)
        self._columns: dict[str, _Column] = {}
        for name in _ACC:
            self._add_column(name, "acc", "sum")
        for name in (*_STATE, *(f"code{w}" for w in range(self.layout.words))):
            self._add_column(name, "state", "last")
        self._allocate()

    # -- tables ---------------------------------------------------------------------------
    def _add_column(self, name: str, table: Literal["acc", "state"], reduce: Reduce) -> None:
        """Declare a column of the accumulator (``reduce="sum"``) or state (``"last"``) table."""
        if (table, reduce) not in (("acc", "sum"), ("state", "last")):
            raise ValueError(f"unknown reduction {reduce!r} for column {name!r} of table {table!r}")
        index = sum(c.table == table for c in self._columns.values())
        self._columns[name] = _Column(table, index, reduce)

    def _width(self, table: str) -> int:
        return sum(c.table == table for c in self._columns.values())

    def _allocate(self) -> None:
        rows = self.num_samples + 1  # + the scratch row
        self._acc = torch.zeros(rows, self._width("acc"), device=self.device)
        self._state = torch.zeros(rows, self._width("state"), device=self.device)
        self._pending: torch.Tensor | None = None
        self._constants: dict[int, _BatchConstants] = {}
        self._word_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pack = self.layout.multipliers(("correct", "label", "pred"), self.device).double()

    @property
    def bytes_per_sample(self) -> float:
        """Device memory the tables hold per sample id (pending included when allocated)."""
        tables = [self._acc, self._state] + ([] if self._pending is None else [self._pending])
        total = sum(t.numel() * t.element_size() for t in tables)
        return total / max(self.num_samples, 1)

    def _code_words(self, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        first = self._columns["code0"].index
        return self._state[rows, first : first + self.layout.words].view(torch.int32)

    def table(self, name: str, pending: bool = False) -> torch.Tensor:
        """The folded column ``name`` (or its not yet synced pending part) as a length-N
        tensor. Integer fields (``label``, ``last_pred``, ``last_correct``, ``last_epoch``)
        are decoded copies; the others are views. Do not modify."""
        n = self.num_samples
        if name in _CODE_NAMES:
            value = self.layout.decode(self._code_words(slice(0, n)), _CODE_NAMES[name])
            if name == "last_correct":
                value = torch.where(self.layout.decode(self._code_words(slice(0, n)), "pred") >= 0, value, -1)
            return value.to({"label": torch.int64, "last_correct": torch.int8}.get(name, torch.int32))
        column = self._columns.get(name)
        if column is None:
            raise KeyError(f"the ledger has no table {name!r}")
        if column.table == "state":
            return self._state[:n, column.index]
        if pending:
            source = self._pending if self._pending is not None else torch.zeros_like(self._acc)
            return source[:n, column.index]
        return self._acc[:n, column.index]

    @property
    def accumulator_names(self) -> tuple[str, ...]:
        return tuple(k for k, c in self._columns.items() if c.table == "acc")

    @property
    def table_names(self) -> tuple[str, ...]:
        return (*self.accumulator_names, *_STATE, *_CODE_NAMES)

    def _batch_constants(self, b: int) -> _BatchConstants:
        constants = self._constants.get(b)
        if constants is None:
            constants = self._constants[b] = _BatchConstants(b, self.device)
        return constants

    def _target(self) -> torch.Tensor:
        """Where ``record`` accumulates: the table itself on one process, else the pending
        copy folded in at :meth:`sync`."""
        self._dirty = True
        if _world_size(self.process_group) == 1:
            return self._acc
        if self._pending is None:
            self._pending = torch.zeros_like(self._acc)
        return self._pending

    # -- recording ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The epoch that following :meth:`record` calls belong to."""
        limit = self.layout.fields["epoch"].limit
        if not 0 <= int(epoch) < limit:
            raise ValueError(f"epoch must lie in [0, {limit}) for this ledger's layout, got {epoch}")
        self.epoch = int(epoch)

    def _check(self, b: int, loss: torch.Tensor, logits: torch.Tensor | None, targets: torch.Tensor | None) -> None:
        if loss.numel() != b:
            raise ValueError(f"loss has {loss.numel()} entries for {b} ids")
        if targets is not None and targets.numel() != b:
            raise ValueError(f"targets has {targets.numel()} entries for {b} ids")
        if logits is None:
            return
        if targets is None:
            raise ValueError("logits need targets")
        if logits.dim() != 2 or logits.shape[0] != b:
            raise ValueError(f"logits must have shape ({b}, C), got {tuple(logits.shape)}")
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, ledger has {self.num_classes}")
        if logits.shape[1] > self.layout.fields["pred"].limit:
            raise ValueError(f"logits have {logits.shape[1]} classes, more than this ledger's layout holds")

    @torch.no_grad()
    def record(
        self,
        ids: torch.Tensor,
        loss: torch.Tensor,
        logits: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> None:
        """Add one batch: ``ids`` int64[B] (duplicates allowed), per-sample ``loss`` [B],
        optional ``logits`` [B, C] with integer ``targets`` [B].

        Duplicate ids in one call: sums and counts take every entry; the EMA is updated once
        per id with the mean of that id's losses in the call; "last" values and forgetting
        transitions follow call order. Never synchronizes with the host.
        """
        ids = _flat(ids).to(self.device, torch.long)
        b = ids.numel()
        if b == 0:
            return
        loss = _flat(loss).to(self.device, torch.float32)
        targets = None if targets is None else _flat(targets).to(self.device, torch.long)
        self._check(b, loss, logits, targets)
        const = self._batch_constants(b)
        target = self._target()
        sorted_ids, order = torch.sort(ids, stable=True)
        torch.ne(sorted_ids[1:], sorted_ids[:-1], out=const.inner)
        first, last = const.first.unsqueeze(1), const.last
        if logits is not None:
            assert targets is not None
            lsm = torch.log_softmax(logits.to(self.device, torch.float32), 1)
            t1 = targets.unsqueeze(1)
            gold = lsm.gather(1, t1)
            other = lsm.scatter(1, t1, -torch.finfo(torch.float32).max).amax(1, keepdim=True)
            feats = torch.cat([loss.unsqueeze(1), gold, gold - other, lsm.argmax(1, keepdim=True), t1], 1)[order]
        else:
            columns = [loss.unsqueeze(1)] + ([] if targets is None else [targets.unsqueeze(1)])
            feats = torch.cat(columns, 1)[order] if targets is not None else loss[order].unsqueeze(1)
        prev = self._state[sorted_ids]
        prev_words = prev[:, 2:].view(torch.int32)
        before = target[sorted_ids, :3]
        label = pred = correct = None
        if targets is not None:
            label = feats[:, -1:]
        if logits is not None:
            l_gold_margin, pred = feats[:, :3], feats[:, 3:4]
            correct = pred == label
            stored = (prev_words[:, :1] & 1).bool()  # the correct bit
            previous = torch.where(first, stored, correct.roll(1, 0))
            lp = torch.cat([l_gold_margin[:, :1], l_gold_margin[:, 1:2].exp()], 1)
            rows = torch.cat([const.ones, lp, lp * lp, l_gold_margin[:, 2:3], correct, previous > correct], 1)
        else:
            l = feats[:, :1]
            rows = torch.cat([const.ones[:, :1], const.zeros[:, :1], l, const.zeros[:, :1], l * l, const.zeros[:, :4]], 1)
        target.index_put_((sorted_ids,), rows, accumulate=True)
        # the EMA takes the mean of this call's losses per id: the growth of count and loss sum
        grown = target[sorted_ids, :3] - before
        run_mean = torch.where(grown[:, :1] == 1, feats[:, :1], grown[:, 2:3] / grown[:, :1])
        seen = prev_words[:, self.layout.fields["epoch"].word : self.layout.fields["epoch"].word + 1] != 0
        ema = torch.where(seen, torch.lerp(run_mean, prev[:, :1], self.ema), run_mean)
        words = self._new_words(prev_words, label, pred, correct)
        state_rows = torch.cat([ema, feats[:, :1], words.view(torch.float32)], 1)
        rows_to = torch.where(last, sorted_ids, self.num_samples)  # duplicates: only the last entry writes
        self._state.index_put_((rows_to,), state_rows)

    def _word_constants(self, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(int32 mask keeping the fields not in ``names``, float64 offsets: the +1 of each
        written field and the current epoch), cached per (fields, epoch)."""
        key = (names, self.epoch)
        cached = self._word_cache.get(key)
        if cached is None:
            f = self.layout.fields
            mask = [-1] * self.layout.words
            for name in names:
                mask[f[name].word] &= ~(((1 << f[name].bits) - 1) << f[name].shift)
            offsets = self.layout.offsets(names)
            offsets[f["epoch"].word] += self.epoch << f["epoch"].shift
            cached = self._word_cache[key] = (
                torch.tensor(mask, dtype=torch.int32, device=self.device),
                torch.tensor(offsets, dtype=torch.float64, device=self.device),
            )
        return cached

    def _new_words(
        self, prev_words: torch.Tensor, label: torch.Tensor | None, pred: torch.Tensor | None, correct: torch.Tensor | None
    ) -> torch.Tensor:
        """The code words after this record: the epoch always, the label with targets, the
        prediction and its correct bit with logits; other fields kept. Inputs are ``[B, 1]``."""
        if pred is not None:
            names: tuple[str, ...] = ("epoch", "label", "pred", "correct")
            packed = torch.cat([correct, label, pred], 1).double() @ self._pack
        elif label is not None:
            names, packed = ("epoch", "label"), label.double() * self._pack[1]
        else:
            names, packed = ("epoch",), None
        mask, offset = self._word_constants(names)
        new = offset if packed is None else packed + offset
        return (prev_words & mask) | new.to(torch.int32)

    # -- cross-rank -----------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Fold this rank's records in: when distributed, sum the pending accumulators across
        ranks and merge the state rows each rank recorded (two all-reduces, on every rank,
        whether or not anything was recorded). Idempotent. A single process has nothing to
        fold."""
        self._dirty = False
        if _world_size(self.process_group) == 1:
            if self._pending is not None:  # records made while distributed, then restored alone
                self._acc += self._pending
                self._pending = None
            return
        if self._pending is None:
            self._pending = torch.zeros_like(self._acc)
        pending = self._pending
        bits = self._state.view(torch.int32)
        touched = pending[:, :1] > 0
        contribution = torch.where(touched, bits, _INT32_MIN)
        dist.all_reduce(pending, op=dist.ReduceOp.SUM, group=self.process_group)
        dist.all_reduce(contribution, op=dist.ReduceOp.MAX, group=self.process_group)
        bits.copy_(torch.where(pending[:, :1] > 0, contribution, bits))
        self._acc += pending
        pending.zero_()

    # -- derived statistics ---------------------------------------------------------------
    @torch.no_grad()
    def stats(self, sync: bool = True) -> LedgerStats:
        """Derived statistics. With ``sync=True`` (default) pending records are synced first
        (a collective when distributed); with ``sync=False`` records not folded yet (only
        when distributed) are left out."""
        if sync:
            self.sync()
        col = {name: self.table(name) for name in self.accumulator_names}
        count = col["count"]
        inv_n = count.clamp_min(1).reciprocal_()
        inv_nl = col["logit_count"].clamp_min(1).reciprocal_()
        mean_loss = col["loss_sum"] * inv_n
        confidence = col["gold_prob_sum"] * inv_nl
        seen, has_logits = count > 0, col["logit_count"] > 0
        return LedgerStats(
            epoch=self.epoch,
            num_seen=int(seen.sum()),
            num_with_logits=int(has_logits.sum()),
            seen=seen,
            has_logits=has_logits,
            count=count.to(torch.int32),
            mean_loss=mean_loss,
            loss_var=_variance(col["loss_sq_sum"] * inv_n, mean_loss),
            ema_loss=self.table("ema_loss").clone(),
            last_loss=self.table("last_loss").clone(),
            aum=col["margin_sum"] * inv_nl,
            confidence=confidence,
            variability=_variance(col["gold_prob_sq_sum"] * inv_nl, confidence).sqrt_(),
            correct_frac=col["correct_count"] * inv_nl,
            forgetting=col["forget_count"].to(torch.int32),
            last_epoch=self.table("last_epoch"),
            labels=self.table("label"),
        )

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every column by name (folded, and pending when not synced) plus settings, as
        tensors on the ledger's device. The same keys as the ledger of separate tables."""
        pending = self._pending is not None and self._dirty
        return {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "ema": self.ema,
            "epoch": self.epoch,
            "tables": {k: self.table(k).clone() for k in self.table_names},
            "pending": {k: self.table(k, pending=True).clone() for k in self.accumulator_names} if pending else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (or an older checkpoint with the same column
        names); raises ``KeyError`` naming anything missing. ``pending`` may be empty
        (nothing unsynced) or must hold every accumulator."""
        missing = [k for k in ("num_samples", "epoch", "tables") if k not in state]
        missing += [f"tables.{k}" for k in self.table_names if k not in state.get("tables", {})]
        pending = state.get("pending") or {}
        if pending:
            missing += [f"pending.{k}" for k in self.accumulator_names if k not in pending]
        if missing:
            raise KeyError(f"ledger state is missing {', '.join(missing)}")
        if int(state["num_samples"]) != self.num_samples:
            raise ValueError(
                f"ledger state has {state['num_samples']} samples, this ledger {self.num_samples}"
            )
        n, tables = self.num_samples, state["tables"]
        self._allocate()
        for name in (*self.accumulator_names, *_STATE):
            column = self._columns[name]
            table = self._acc if column.table == "acc" else self._state
            table[:n, column.index] = tables[name].to(self.device, torch.float32)
        last_epoch = tables["last_epoch"].to(self.device, torch.int64)
        if "last_epoch" in pending:  # older checkpoints kept it as a pending maximum
            last_epoch = torch.maximum(last_epoch, pending["last_epoch"].to(self.device, torch.int64))
        self._code_words(slice(0, n)).copy_(self._encode(tables, last_epoch))
        if pending:
            rows = torch.stack([pending[k].to(self.device, torch.float32) for k in self.accumulator_names], 1)
            if _world_size(self.process_group) == 1:
                self._acc[:n] += rows
            else:
                self._pending = torch.zeros_like(self._acc)
                self._pending[:n] = rows
        self._dirty = bool(pending)
        self.epoch = int(state["epoch"])
        self.ema = float(state.get("ema", self.ema))

    def _encode(self, tables: dict[str, torch.Tensor], last_epoch: torch.Tensor) -> torch.Tensor:
        """int32 code words ``[N, words]`` from label / last_pred / last_correct / last_epoch
        columns (-1 = unknown)."""
        words = torch.zeros(self.num_samples, self.layout.words, dtype=torch.int64, device=self.device)
        values = {
            "label": tables["label"].to(self.device, torch.int64) + 1,
            "pred": tables["last_pred"].to(self.device, torch.int64) + 1,
            "epoch": last_epoch + 1,
            "correct": (tables["last_correct"].to(self.device, torch.int64) == 1).long(),
        }
        for name, value in values.items():
            f = self.layout.fields[name]
            if bool((value > f.limit).any()):
                raise ValueError(f"ledger state: {name} exceeds this ledger's layout ({f.bits} bits)")
            words[:, f.word] |= value.clamp_min(0) << f.shift
        return words.to(torch.int32)

    def to(self, device: torch.device | str) -> Ledger:
        """Move every table to ``device`` (in place); returns ``self``."""
        self.device = torch.device(device)
        self._acc = self._acc.to(self.device)
        self._state = self._state.to(self.device)
        self._pending = None if self._pending is None else self._pending.to(self.device)
        self._constants.clear()
        self._word_cache.clear()
        self._pack = self._pack.to(self.device)
        return self
