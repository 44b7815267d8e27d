"""The ledger: dense per-sample training statistics, kept on the training device.

Storage is one float32 table ``[K, N]`` (48 bytes per sample with up to 127 classes), one
column per sample id (statistics read contiguous rows at epoch end), whose rows are declared with their cross-rank reduction through
:meth:`Ledger._add_column`, in the spirit of torchmetrics' ``add_state``:

* ``"sum"`` columns: count, logit count, loss sum, margin sum, gold-probability sum and its
  square, correct count, forgetting events;
* ``"last"`` columns: the last loss; one (two with more than 127 classes) *code word* holding
  the label, the last prediction and the last epoch as unsigned bit fields of a float-valued
  integer (exact below 2**24), whose sign says whether that prediction was correct; and the
  EMA loss as a numerator and a denominator (the EMA is their ratio).

``record`` is one accumulating scatter. Sums add every entry; "last" columns are updated by
*telescoping* deltas: in id order (one stable sort), each entry adds its value minus the value
before it (the previous entry of the same id in call order, or the table's value for the first
entry), so the deltas of one id sum to its last value. The EMA numerator and denominator are
reset the same way and then take the EMA candidate of every entry and a count, so their ratio
updates the EMA once per id with the mean of that id's losses in the call. Duplicate ids
therefore need no second scatter and no write conflicts (``index_put_(accumulate=True)`` is
deterministic on CUDA too).

Recording and folding are separate steps. ``record`` writes into the table itself; when
``torch.distributed`` runs with more than one rank the ledger also keeps a ``base`` copy taken
at the last :meth:`Ledger.sync`, and ``sync`` folds: it sums the "sum" columns' growth across
ranks (one all-reduce) and merges the "last" columns of the rows each rank recorded (one
all-reduce of their int32 bit patterns with ``MAX``; rows a rank did not record carry the
lowest int32) — two collectives whatever K is. Between two syncs each id is expected to be
recorded by one rank (the loader splits an epoch's samples disjointly); if two ranks record the
same id, the "last" columns keep one of them (an approximation, never a hang). A sharded
ledger (each rank owning an id range) would replace only the fold.

``record`` never leaves the device (no ``.item()``, ``.cpu()``, ``.tolist()``, boolean
indexing or ``torch.unique``) and, with logits, dispatches 20 aten ops per call whatever the
batch size: every intermediate lives in a per-batch-size workspace whose views are made once
(see ``benchmarks/op_counts.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Collection
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Literal

import torch
import torch.distributed as dist

from .lazy import Deferred, LazyField, resolved_state
from .reducer import Reducer, kth_value

Reduce = Literal["sum", "last"]
_INT32_MIN = torch.iinfo(torch.int32).min
_WORD_BITS = 24  # float32 holds every integer of magnitude below 2**24 exactly
_EPOCH_BITS_MIN = 10  # at least 1023 epochs
_NEVER = float(2**25)  # above every code word: "no forgetting possible" threshold
_MASK = 1e30  # added (negated) to logits to leave a class out of a maximum
_LOOKUP_MAX_CLASSES = 127  # (label, prediction) tables of at most 127**2 entries
_MAX_WORKSPACES = 4  # batch sizes whose buffers are kept


@dataclass(frozen=True)
class _Field:
    """An unsigned bit field ``[shift, shift + bits)`` of code word ``word``; stores value + 1
    (0 means "unknown")."""

    word: int
    shift: int
    bits: int

    @property
    def limit(self) -> int:
        return (1 << self.bits) - 1  # largest storable value + 1


class _CodeLayout:
    """Where ``label``, ``pred`` and ``epoch`` live in the float-valued code words.

    With ``num_classes <= 127`` one word holds all three (2·b bits for the classes, at least
    10 for the epoch); otherwise (or with unknown classes) two words: the label (up to
    2**24 - 2 classes), and prediction (up to 16383 classes) + epoch. The word holding the
    epoch is never 0 once written; its sign is the correct bit of the last prediction.
    """

    def __init__(self, num_classes: int | None) -> None:
        b = None if num_classes is None else max(1, int(num_classes).bit_length())
        if b is not None and 2 * b + _EPOCH_BITS_MIN <= _WORD_BITS:
            self.words = 1
            self.fields = {"label": _Field(0, 0, b), "pred": _Field(0, b, b), "epoch": _Field(0, 2 * b, _WORD_BITS - 2 * b)}
        else:
            p = _WORD_BITS - _EPOCH_BITS_MIN
            self.words = 2
            self.fields = {"label": _Field(0, 0, _WORD_BITS), "pred": _Field(1, 0, p), "epoch": _Field(1, p, _EPOCH_BITS_MIN)}
        self.sign_word = self.fields["epoch"].word

    def encode(self, label: torch.Tensor, pred: torch.Tensor, correct: torch.Tensor, epoch: torch.Tensor | int) -> torch.Tensor:
        """Float code words ``[words, *shape]`` from int64 ``label``/``pred``/``epoch`` (-1:
        unknown) and ``correct`` (nonzero: the prediction was right)."""
        shape = torch.broadcast_shapes(label.shape, pred.shape, correct.shape)
        words = [torch.zeros(shape, dtype=torch.int64, device=label.device) for _ in range(self.words)]
        for name, value in (("label", label), ("pred", pred), ("epoch", epoch)):
            f = self.fields[name]
            words[f.word] = words[f.word] + ((value + 1) << f.shift)
        s = self.sign_word
        words[s] = torch.where(correct != 0, words[s], -words[s])
        return torch.stack(words).to(torch.float32)

    def decode(self, words: torch.Tensor, name: str) -> torch.Tensor:
        """Field ``name`` as int64 (value, -1 where unknown) from float code words
        ``[..., words]``; ``"correct"`` gives 1 or 0 (the sign)."""
        if name == "correct":
            return (words[..., self.sign_word] > 0).to(torch.int64)
        return self.field(self.magnitudes(words), name).to(torch.int64)

    @staticmethod
    def magnitudes(words: torch.Tensor) -> torch.Tensor:
        """int32 magnitudes of float code words (exact: below 2**24)."""
        return words.abs().to(torch.int32)

    def field(self, magnitudes: torch.Tensor, name: str) -> torch.Tensor:
        """Field ``name`` (int32, -1 where unknown) from :meth:`magnitudes`."""
        f = self.fields[name]
        return ((magnitudes[..., f.word] >> f.shift) & ((1 << f.bits) - 1)) - 1


def _world_size(group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 1 else x.reshape(-1)


# Column order matters to the workspace: margin, gold, gold² adjacent; last loss, code words,
# EMA numerator, EMA denominator adjacent, in this order.
_SUMS = (
    "count",
    "logit_count",
    "loss_sum",
    "margin_sum",
    "gold_prob_sum",
    "gold_prob_sq_sum",
    "correct_count",
    "forget_count",
)
_CODE_NAMES = {"label": "label", "last_pred": "pred", "last_epoch": "epoch", "last_correct": "correct"}


@dataclass(frozen=True)
class LedgerStats:
    """Read-only derived per-sample statistics (tensors of length N on the ledger's device).

    Means are over all recorded observations; ``aum``, ``confidence``, ``variability``,
    ``correct_frac`` are over observations recorded with logits. Unseen entries hold 0.
    :meth:`Ledger.stats` computes each per-sample statistic when it is first read (a plan reads
    a few of them), or before its ledger next records or syncs, whichever comes first.
    """

    epoch: int
    num_seen: int
    num_with_logits: int
    seen: torch.Tensor  # bool: recorded at least once
    has_logits: torch.Tensor  # bool: recorded at least once with logits
    count: torch.Tensor = LazyField()  # int32
    mean_loss: torch.Tensor = LazyField()
    ema_loss: torch.Tensor = LazyField()
    last_loss: torch.Tensor = LazyField()
    aum: torch.Tensor = LazyField()  # mean margin: assigned-label logit minus largest other logit
    confidence: torch.Tensor = LazyField()  # mean probability of the assigned label
    variability: torch.Tensor = LazyField()  # std of that probability
    correct_frac: torch.Tensor = LazyField()
    forgetting: torch.Tensor = LazyField()  # int32: correct -> incorrect transitions
    last_epoch: torch.Tensor = LazyField()  # int32: last epoch recorded, -1 never
    labels: torch.Tensor = LazyField()  # int32: last recorded target, -1 unknown

    def __getstate__(self) -> dict[str, Any]:
        return resolved_state(self, [f.name for f in fields(self)])

    @property
    def num_samples(self) -> int:
        return int(self.seen.shape[0])

    @property
    def device(self) -> torch.device:
        return self.seen.device

    @property
    def all_seen(self) -> bool:
        return self.num_seen == self.num_samples

    @property
    def reducer(self) -> Reducer:
        """Global quantities for policies: the identity here (these stats cover every id)."""
        return Reducer(self.num_samples)

    def computed(self) -> dict[str, torch.Tensor]:
        """The lazy statistics held now (computed and not released), by name; computes nothing."""
        held = {}
        for name in _DERIVED:
            value = self.__dict__.get(name)
            if isinstance(value, torch.Tensor):
                held[name] = value
            elif isinstance(value, Deferred) and value.computed:
                held[name] = value.value()
        return held

    def release(self, keep: Collection[str] = ()) -> None:
        """Let go of the computed statistics not named in ``keep`` (a plan frees what no later
        stage reads). A later read computes one again, with the same values: until the ledger's
        table changes the ledger can recompute it, and before it changes the ledger computes every
        statistic of live ``stats()`` results, released ones too, and keeps them."""
        for name in _DERIVED:
            value = self.__dict__.get(name)
            if name not in keep and isinstance(value, Deferred):
                value.release()

    @property
    def memo(self) -> dict[Any, Any]:
        """Results policies share while deciding over these statistics, by a key that names
        what they depend on (e.g. a fitted mixture); small values only, kept as long as the
        statistics are."""
        return self.__dict__.setdefault("_memo", {})

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
            n = int(torch.count_nonzero(mask))
        if n == 0:
            return torch.tensor(float("nan"), device=values.device)
        subset = values if n == values.numel() else values[mask]
        return kth_value(subset.float(), nearest_rank(q, n))


def nearest_rank(q: float, n: int) -> int:
    """The 1-based rank of the ``q`` quantile (nearest rank) among ``n >= 1`` values."""
    return min(n, max(1, round(q * (n - 1)) + 1))


def _variance(mean_square: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``mean_square - mean**2`` clamped at 0, computed in place into ``mean_square``."""
    return mean_square.addcmul_(mean, mean, value=-1).clamp_min_(0)


class _Derived:
    """The per-sample statistics of :class:`LedgerStats` from the ledger's rows (views), each
    computed on demand; intermediates shared by several statistics are computed once."""

    def __init__(self, rows: dict[str, torch.Tensor], layout: _CodeLayout, words: torch.Tensor) -> None:
        self.rows = rows
        self.layout = layout
        self.words = words  # code words [words, N]

    def _inv_nl(self) -> torch.Tensor:
        return self.rows["logit_count"].clamp_min(1).reciprocal_()

    @cached_property
    def inv_nl(self) -> torch.Tensor:
        return self._inv_nl()

    @cached_property
    def confidence(self) -> torch.Tensor:
        return self.rows["gold_prob_sum"] * self.inv_nl

    def field(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """Code-word field ``name`` (-1 where unknown) as ``dtype``, as
        :meth:`_CodeLayout.field` computes it, in place on one new tensor."""
        f = self.layout.fields[name]
        value = self.words[f.word].to(torch.int32).abs_()  # every field fits int32 (truncation commutes with abs)
        if f.shift:
            value.bitwise_right_shift_(f.shift)
        value = value.bitwise_and_(f.limit).sub_(1)
        return value if dtype == torch.int32 else value.to(dtype)

    def value(self, name: str) -> torch.Tensor:
        """Statistic ``name`` of :class:`LedgerStats` (a new tensor)."""
        rows = self.rows
        if name == "count":
            return rows["count"].to(torch.int32)
        if name == "mean_loss":
            return rows["count"].clamp_min(1).reciprocal_().mul_(rows["loss_sum"])  # loss_sum / count, one array
        if name == "ema_loss":
            return rows["ema_num"] / rows["ema_den"]
        if name == "last_loss":
            return rows["last_loss"].clone()
        if name == "aum":  # without keeping 1 / logit_count unless another statistic made it
            inv_nl = self.__dict__.get("inv_nl")
            return rows["margin_sum"] * inv_nl if inv_nl is not None else self._inv_nl().mul_(rows["margin_sum"])
        if name == "confidence":
            return self.confidence
        if name == "variability":
            return _variance(rows["gold_prob_sq_sum"] * self.inv_nl, self.confidence).sqrt_()
        if name == "correct_frac":
            return rows["correct_count"] * self.inv_nl
        if name == "forgetting":
            return rows["forget_count"].to(torch.int32)
        if name == "last_epoch":
            return self.field("epoch", torch.int32)
        if name == "labels":
            return self.field("label", torch.int32)
        raise KeyError(name)


_DERIVED = ("count", "mean_loss", "ema_loss", "last_loss", "aum", "confidence", "variability",
            "correct_frac", "forgetting", "last_epoch", "labels")


class _Workspace:
    """Buffers and views for one batch size, made once and reused by every ``record``.

    ``feats`` holds per-entry rows in call order, ``rows`` the same rows in id order with one
    leading column, so that ``rows[:, :-1]`` is "the entry before" of ``rows[:, 1:]``. The first
    ``K`` rows of ``rows`` are, in table column order, what the scatter adds (``values``).
    """

    def __init__(self, ledger: Ledger, b: int) -> None:
        dev, k, words = ledger.device, ledger.width, ledger.layout.words
        c = ledger.column
        self.mode: str | None = None
        self.loss, self.correct, self.forget = c["loss_sum"], c["correct_count"], c["forget_count"]
        self.code_rows = [self.loss + k * (i + 1) for i in range(words)]  # telescoped with the loss row
        step = self.code_rows[0] - self.correct
        self.lookup_rows = slice(self.correct, self.correct + 2 * step + 1, step)  # correct, code, threshold
        self.threshold = self.correct + 2 * step
        z0 = max(self.threshold, self.code_rows[-1]) + 1
        height = z0 + 4
        self.ema_rows = height  # EMA candidate, ones, EMA weight, previous EMA
        self.feats = torch.zeros(height, b, device=dev)
        self.rows = torch.zeros(height + 4, b + 1, device=dev)
        self.feats[[c["count"], c["logit_count"]]] = 1.0
        self.rows[self.ema_rows + 1] = 1.0
        self.keys = torch.full((b + 1,), -1, dtype=torch.long, device=dev)
        self.sorted_ids, self.before_ids = self.keys[1:], self.keys[:-1]
        self.order = torch.empty(b, dtype=torch.long, device=dev)
        self.first = torch.empty(b, device=dev)
        self.first_all_ones = False  # ``first`` holds ones (set by a fold of distinct ids)
        self.penalties = torch.empty(0, device=dev)
        self.masked = torch.empty(0, device=dev)
        self.extremes = self.feats[z0 : z0 + 3]  # gold logit, largest other, largest
        self.argmax = torch.empty(3, b, dtype=torch.long, device=dev)
        self.pred = self.argmax[2]
        self.lse = self.feats[z0 + 3]
        self.logit_block = self.feats[z0 : z0 + 4]
        self.margin_gold = self.feats[c["margin_sum"] : c["gold_prob_sq_sum"] + 1]  # margin, gold, 2·gold
        self.probs = self.feats[c["gold_prob_sum"] : c["gold_prob_sq_sum"] + 1]
        self.loss_feat = self.feats[self.loss]
        self.lookup_out = self.feats[self.lookup_rows]
        self.permuted = self.rows[:height, 1:]
        self.values = self.rows[:k, 1:]
        self.put_index = (torch.arange(k, device=dev).unsqueeze(1), self.sorted_ids.unsqueeze(0))
        last = c["last_loss"]
        tel = slice(self.loss, self.code_rows[-1] + 1, k)
        self.tel_now, self.tel_before = self.rows[tel, 1:], self.rows[tel, :-1]
        self.tel_out = self.rows[last : last + 1 + words, 1:]
        self.prev = torch.empty(1 + words, b, device=dev)
        self.prev_sign = self.prev[1 + ledger.layout.sign_word]
        self.threshold_row = self.rows[self.threshold, 1:]
        self.forget_out = self.rows[self.forget, 1:]
        self.gathered = torch.empty(k, b, device=dev)
        g = self.gathered
        # the table rows the fold reads: the count, and last loss, code words and EMA (adjacent)
        self.read_rows = [(c["count"], c["count"] + 1), (last, c["ema_den"] + 1)]
        self.g_count, self.g_num, self.g_den = g[c["count"]], g[c["ema_num"]], g[c["ema_den"]]
        self.g_last = g[last : last + 1 + words]
        self.g_ema = g[c["ema_num"] : c["ema_den"] + 1]
        e = self.ema_rows
        self.candidate, self.weight, self.prev_ema = self.rows[e, 1:], self.rows[e + 2, 1:], self.rows[e + 3, 1:]
        self.ema_now = self.rows[e : e + 2, 1:]  # candidate, 1
        self.ema_out = self.rows[c["ema_num"] : c["ema_den"] + 1, 1:]
        self.loss_sorted = self.rows[self.loss, 1:]

    def logit_buffers(self, c: int) -> None:
        if self.masked.shape[-1] != c:
            b = self.feats.shape[1]
            self.penalties = torch.empty(3, b, c, device=self.feats.device)
            self.masked = torch.empty(3, b, c, device=self.feats.device)


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
        self._reduce: dict[str, Reduce] = {}
        for name in _SUMS:
            self._add_column(name, "sum")
        for name in ("last_loss", *(f"code{w}" for w in range(self.layout.words)), "ema_num", "ema_den"):
            self._add_column(name, "last")
        self.column = {name: i for i, name in enumerate(self._reduce)}
        self.width = len(self._reduce)
        self._allocate()

    # -- table ------------------------------------------------------------------------------
    def _add_column(self, name: str, reduce: Reduce) -> None:
        """Declare a column summed across ranks (``"sum"``) or taken from the rank that
        recorded the row (``"last"``)."""
        if reduce not in ("sum", "last"):
            raise ValueError(f"unknown reduction {reduce!r} for column {name!r}")
        self._reduce[name] = reduce

    def _allocate(self) -> None:
        self._table = torch.zeros(self.width, self.num_samples, device=self.device)
        self._table[self.column["ema_den"]] = 1.0  # EMA 0/1 = 0 until recorded
        self._base: torch.Tensor | None = None  # the table at the last sync (distributed only)
        self._workspaces: dict[int, _Workspace] = {}
        self._constants: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self._open_stats: list[weakref.ref[Deferred]] = []  # unread statistics of earlier stats()

    @property
    def bytes_per_sample(self) -> float:
        """Device memory the table holds per sample id (the distributed base copy included
        when allocated)."""
        tables = [self._table] + ([] if self._base is None else [self._base])
        total = sum(t.numel() * t.element_size() for t in tables)
        return total / max(self.num_samples, 1)

    def _distributed(self) -> bool:
        """Whether records are folded across ranks by :meth:`sync` (a ``base`` copy is kept)."""
        return _world_size(self.process_group) > 1

    @property
    def _sum_width(self) -> int:
        return len(_SUMS)

    def _code_words(self, table: torch.Tensor | None = None) -> torch.Tensor:
        """The code words of ``table`` (default: the ledger's) as ``[columns, words]``."""
        first = self.column["code0"]
        return (self._table if table is None else table)[first : first + self.layout.words].t()

    def table(self, name: str, pending: bool = False) -> torch.Tensor:
        """Column ``name`` as a length-N tensor: sums as folded (or, with ``pending=True``, the
        records not synced yet: only when distributed), ``ema_loss`` as numerator over
        denominator, integer fields (``label``, ``last_pred``, ``last_correct``, ``last_epoch``)
        decoded. Do not modify."""
        if name in _CODE_NAMES:
            words = self._code_words()
            value = self.layout.decode(words, _CODE_NAMES[name])
            if name == "last_correct":
                value = torch.where(self.layout.decode(words, "pred") >= 0, value, -1)
            return value.to({"label": torch.int64, "last_correct": torch.int8}.get(name, torch.int32))
        if name == "ema_loss":
            return self._table[self.column["ema_num"]] / self._table[self.column["ema_den"]]
        if name not in _SUMS and name != "last_loss":
            raise KeyError(f"the ledger has no table {name!r}")
        column = self._table[self.column[name]]
        if name == "last_loss":
            return column
        if pending:
            return column - self._base[self.column[name]] if self._base is not None else torch.zeros_like(column)
        return column if self._base is None else self._base[self.column[name]]

    @property
    def accumulator_names(self) -> tuple[str, ...]:
        return _SUMS

    @property
    def table_names(self) -> tuple[str, ...]:
        return (*_SUMS, "ema_loss", "last_loss", *_CODE_NAMES)

    # -- recording --------------------------------------------------------------------------
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

    def _workspace(self, b: int, mode: str) -> _Workspace:
        ws = self._workspaces.get(b)
        if ws is None:
            if len(self._workspaces) >= _MAX_WORKSPACES:  # e.g. a full and a last partial batch
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[b] = _Workspace(self, b)
        if ws.mode != mode:  # rows that one kind of call fills and the other keeps constant
            c = self.column
            ws.feats[c["logit_count"]] = 1.0 if mode == "logits" else 0.0
            if mode != "logits":
                ws.feats[c["margin_sum"] : c["correct_count"] + 1] = 0.0
                ws.feats[ws.threshold] = _NEVER  # no logits, no forgetting
            ws.mode = mode
        return ws

    def _logit_tables(self, c: int) -> tuple[torch.Tensor, ...]:
        """Per class count and epoch: the maximum masks ``[3, C, C]`` (only the target, all but
        the target, all), the logit-block coefficients and (up to 127 classes) the code rows
        by (target, prediction)."""
        key = (c, self.epoch)
        cached = self._constants.get(key)
        if cached is None:
            self._constants = {k: v for k, v in self._constants.items() if k[0] != c}
            eye = torch.eye(c, dtype=torch.bool, device=self.device)
            masks = torch.stack([~eye, eye, torch.zeros_like(eye)]).float().mul_(-_MASK)
            # margin = gold - largest other; log p = gold - lse; 2 log p
            coeff = torch.tensor([[1.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, -1.0], [2.0, 0.0, 0.0, -2.0]], device=self.device)
            lookup = torch.empty(0, device=self.device)
            if self.layout.words == 1 and c <= _LOOKUP_MAX_CLASSES:
                grid = torch.arange(c, device=self.device)
                lookup = self._logit_rows(grid[:, None], grid[None, :])
            cached = self._constants[key] = (masks, coeff, lookup)
        return cached

    def _logit_rows(self, targets: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """``[correct, code words..., forgetting threshold]`` for (target, prediction) pairs."""
        correct = (pred == targets).float()
        words = self.layout.encode(targets, pred, correct, self.epoch)
        threshold = correct * _NEVER  # forgetting: the word before is positive (was correct) and above this
        return torch.cat([correct[None], words, threshold[None]])

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
        entries = self._entries(ids, loss, logits, targets)
        if entries is not None:
            self._fold(*entries)

    def _entries(
        self, ids: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor | None, targets: torch.Tensor | None,
    ) -> tuple[_Workspace, torch.Tensor, torch.Tensor | None] | None:
        """Check one call's arguments and compute its per-entry rows (``None`` for no entries):
        the workspace holding them, the ids and the targets, on the ledger's device."""
        ids = _flat(ids).to(self.device, torch.long)
        b = ids.numel()
        if b == 0:
            return None
        loss = _flat(loss).to(self.device, torch.float32)
        targets = None if targets is None else _flat(targets).to(self.device, torch.long)
        self._check(b, loss, logits, targets)
        ws = self._workspace(b, "logits" if logits is not None else "loss")
        self._entry_features(ws, loss, logits, targets)
        return ws, ids, targets

    def _entry_features(self, ws: _Workspace, loss: torch.Tensor, logits: torch.Tensor | None, targets: torch.Tensor | None) -> None:
        """Per-entry rows in call order into ``ws.feats`` (they do not read the table)."""
        if logits is not None:
            assert targets is not None
            self._logit_features(ws, logits.to(self.device, torch.float32), targets)
        ws.loss_feat.copy_(loss)

    def _fold(
        self, ws: _Workspace, ids: torch.Tensor, targets: torch.Tensor | None, presorted: bool = False,
        distinct: bool = False,
    ) -> None:
        """Fold the entries of ``ws.feats`` (call order, ids ``ids``) into the table: one
        accumulating scatter. ``targets`` is only read by calls without logits.

        ``presorted``: the entries are already in id order (stable: call order within an id)
        in ``ws.permuted``, with ``ids`` and ``targets`` in that order, so no sort and no
        permutation. ``distinct``: no id occurs twice, so every entry is the first of its id
        (the flags are ones, not compared) and the scatter is an ``index_add_`` (one addition
        per table cell: the same sums, deterministic on every device); only the table rows
        the fold reads are gathered (the count, last loss, code words and EMA)."""
        self._settle_stats()
        if self._base is None and self._distributed():
            self._base = self._table.clone()
        self._dirty = True
        if presorted:
            if ids is not ws.sorted_ids:
                ws.sorted_ids.copy_(ids)
        else:
            torch.sort(ids, stable=True, out=(ws.sorted_ids, ws.order))
            torch.index_select(ws.feats, 1, ws.order, out=ws.permuted)
        if distinct:  # every entry is the first of its id: ``first`` is ones, only the rows read are gathered
            if not ws.first_all_ones:
                ws.first.fill_(1.0)
                ws.first_all_ones = True
            for lo, hi in ws.read_rows:
                torch.index_select(self._table[lo:hi], 1, ws.sorted_ids, out=ws.gathered[lo:hi])
        else:
            torch.ne(ws.sorted_ids, ws.before_ids, out=ws.first)  # first entry of its id
            ws.first_all_ones = False
            torch.index_select(self._table, 1, ws.sorted_ids, out=ws.gathered)
        if ws.mode != "logits":
            self._kept_code_words(ws, targets if presorted or targets is None else targets[ws.order])
        # the EMA candidate lerp(loss, previous EMA, a) (a = 0 before the first record)
        torch.clamp(ws.g_count, max=self.ema, out=ws.weight)
        torch.div(ws.g_num, ws.g_den, out=ws.prev_ema)
        torch.lerp(ws.loss_sorted, ws.prev_ema, ws.weight, out=ws.candidate)
        # "last" columns: value minus the value before (the table's for an id's first entry)
        torch.lerp(ws.tel_before, ws.g_last, ws.first, out=ws.prev)
        torch.sub(ws.tel_now, ws.prev, out=ws.tel_out)
        torch.gt(ws.prev_sign, ws.threshold_row, out=ws.forget_out)
        # EMA numerator and denominator: reset at an id's first entry, then candidate and 1
        torch.addcmul(ws.ema_now, ws.first, ws.g_ema, value=-1, out=ws.ema_out)
        if distinct:
            self._table.index_add_(1, ws.sorted_ids, ws.values)
        else:
            self._table.index_put_(ws.put_index, ws.values, accumulate=True)

    def _logit_features(self, ws: _Workspace, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Margin, gold probability and its square, correct bit, code words and forgetting
        threshold of every entry, in call order, into ``ws.feats``."""
        masks, coeff, lookup = self._logit_tables(logits.shape[1])
        ws.logit_buffers(logits.shape[1])
        torch.index_select(masks, 1, targets, out=ws.penalties)
        torch.add(logits, ws.penalties, out=ws.masked)
        torch.max(ws.masked, 2, out=(ws.extremes, ws.argmax))
        torch.logsumexp(logits, 1, out=ws.lse)
        torch.mm(coeff, ws.logit_block, out=ws.margin_gold)
        ws.probs.exp_()
        if lookup.numel():
            torch.ops.aten.index.Tensor_out(lookup, [None, targets, ws.pred], out=ws.lookup_out)
        else:
            rows = self._logit_rows(targets, ws.pred)
            ws.feats[ws.correct].copy_(rows[0])
            for row, value in zip(ws.code_rows, rows[1:-1]):
                ws.feats[row].copy_(value)
            ws.feats[ws.threshold].copy_(rows[-1])

    def _kept_code_words(self, ws: _Workspace, sorted_targets: torch.Tensor | None) -> None:
        """Code words of a call without logits, in id order: the epoch, the label when given
        (``sorted_targets``, in id order), the table's prediction and correct bit."""
        words = self._code_words(ws.gathered)
        label = self.layout.decode(words, "label") if sorted_targets is None else sorted_targets
        new = self.layout.encode(label, self.layout.decode(words, "pred"), self.layout.decode(words, "correct"), self.epoch)
        for row, value in zip(ws.code_rows, new):
            ws.rows[row, 1:].copy_(value)

    # -- cross-rank -------------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Fold this rank's records in: when distributed, sum the growth of the "sum" columns
        across ranks and merge the "last" columns of the rows each rank recorded (two
        all-reduces, on every rank, whether or not anything was recorded). Idempotent. A
        single process has nothing to fold."""
        self._dirty = False
        if not self._distributed():
            self._base = None
            return
        self._settle_stats()
        if self._base is None:
            self._base = self._table.clone()
        s = self._sum_width
        growth = self._table[:s] - self._base[:s]
        bits = self._table[s:].view(torch.int32)
        contribution = torch.where(growth[:1] > 0, bits, _INT32_MIN)
        dist.all_reduce(growth, op=dist.ReduceOp.SUM, group=self.process_group)
        dist.all_reduce(contribution, op=dist.ReduceOp.MAX, group=self.process_group)
        bits.copy_(torch.where(growth[:1] > 0, contribution, bits))
        self._table[:s] = self._base[:s] + growth
        self._base.copy_(self._table)

    # -- derived statistics -----------------------------------------------------------------
    @torch.no_grad()
    def stats(self, sync: bool = True) -> LedgerStats:
        """Derived statistics. With ``sync=True`` (default) records are synced first (a
        collective when distributed); with ``sync=False`` records not folded yet (only when
        distributed) are left out of the sums."""
        if sync:
            self.sync()
        s = self._sum_width
        sums = self._table if self._base is None else self._base  # the folded sums (views, no copy)
        rows = {name: (sums if i < s else self._table)[i] for name, i in self.column.items()}
        first = self.column["code0"]
        derived = _Derived(rows, self.layout, self._table[first : first + self.layout.words])
        deferred = {name: Deferred(lambda name=name: derived.value(name), recomputable=True) for name in _DERIVED}
        self._open_stats = [r for r in self._open_stats if r() is not None] + [weakref.ref(d) for d in deferred.values()]
        seen, has_logits = rows["count"] > 0, rows["logit_count"] > 0
        return LedgerStats(
            epoch=self.epoch,
            num_seen=int(torch.count_nonzero(seen)),  # not bool sum(): several times slower
            num_with_logits=int(torch.count_nonzero(has_logits)),
            seen=seen,
            has_logits=has_logits,
            **deferred,  # type: ignore[arg-type]
        )

    def _settle_stats(self) -> None:
        """Compute the statistics still unread of earlier :meth:`stats` calls (those whose
        results are alive) before the table changes; a host-side check when there are none."""
        if self._open_stats:
            for ref in self._open_stats:
                d = ref()
                if d is not None:
                    d.freeze()
            self._open_stats = []

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every column by name (folded, and pending when not synced) plus settings, as
        tensors on the ledger's device. The same keys as the ledger of separate tables."""
        pending = self._base is not None and self._dirty
        return {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "ema": self.ema,
            "epoch": self.epoch,
            "tables": {k: self.table(k).clone() for k in self.table_names},
            "pending": {k: self.table(k, pending=True).clone() for k in _SUMS} if pending else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (or an older checkpoint with the same column
        names; columns no longer kept are ignored); raises ``KeyError`` naming anything
        missing. ``pending`` may be empty (nothing unsynced) or must hold every sum."""
        missing = [k for k in ("num_samples", "epoch", "tables") if k not in state]
        missing += [f"tables.{k}" for k in self.table_names if k not in state.get("tables", {})]
        pending = state.get("pending") or {}
        if pending:
            missing += [f"pending.{k}" for k in _SUMS if k not in pending]
        if missing:
            raise KeyError(f"ledger state is missing {', '.join(missing)}")
        if int(state["num_samples"]) != self.num_samples:
            raise ValueError(f"ledger state has {state['num_samples']} samples, this ledger {self.num_samples}")
        tables = state["tables"]
        self._allocate()
        for name in (*_SUMS, "last_loss"):
            self._table[self.column[name]] = tables[name].to(self.device, torch.float32)
        self._table[self.column["ema_num"]] = tables["ema_loss"].to(self.device, torch.float32)
        last_epoch = tables["last_epoch"].to(self.device, torch.int64)
        if "last_epoch" in pending:  # older checkpoints kept it as a pending maximum
            last_epoch = torch.maximum(last_epoch, pending["last_epoch"].to(self.device, torch.int64))
        self._code_words().copy_(self._encode(tables, last_epoch).t())
        if pending:
            rows = torch.stack([pending[k].to(self.device, torch.float32) for k in _SUMS])
            if self._distributed():
                self._base = self._table.clone()
            self._table[: self._sum_width] += rows
        self._dirty = bool(pending)
        self.epoch = int(state["epoch"])
        self.ema = float(state.get("ema", self.ema))

    def _encode(self, tables: dict[str, torch.Tensor], last_epoch: torch.Tensor) -> torch.Tensor:
        """Code words ``[words, N]`` from label / last_pred / last_correct / last_epoch columns
        (-1 = unknown), checked against the layout."""
        values = {
            "label": tables["label"].to(self.device, torch.int64),
            "pred": tables["last_pred"].to(self.device, torch.int64),
            "epoch": last_epoch,
        }
        for name, value in values.items():
            if bool((value + 1 > self.layout.fields[name].limit).any()):
                raise ValueError(f"ledger state: {name} exceeds this ledger's layout ({self.layout.fields[name].bits} bits)")
        correct = tables["last_correct"].to(self.device, torch.int64) == 1
        return self.layout.encode(values["label"], values["pred"], correct, values["epoch"])

    def to(self, device: torch.device | str) -> Ledger:
        """Move the table to ``device`` (in place); returns ``self``."""
        self.device = torch.device(device)
        self._table = self._table.to(self.device)
        self._base = None if self._base is None else self._base.to(self.device)
        self._workspaces.clear()
        self._constants.clear()
        return self
