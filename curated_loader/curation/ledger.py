"""The ledger: dense per-sample training statistics, kept on the training device.

Every table is a tensor of length N (one slot per sample id) declared with its cross-rank
reduction through :meth:`Ledger._add_table`, in the spirit of torchmetrics' ``add_state``.
Two kinds of tables exist:

* **accumulators** (``reduce="sum" | "max" | "min"``). :meth:`Ledger.record` writes into a
  *pending* copy (allocated on first use); :meth:`Ledger.sync` reduces the pending copy across
  ranks when distributed, folds it into the total with the same operation and resets it to the
  identity, so a second ``sync`` with nothing recorded in between changes nothing. The single
  process takes the same path, so a run on one rank and the same records spread over several
  ranks give bit-identical tables (when each id is recorded by one rank per epoch).
* **states** (``reduce="masked_max"``): sequential quantities (EMA loss, last loss, last
  correctness, label) that cannot be summed. Each rank updates them in place for the ids it
  records. At ``sync`` every rank contributes its value only where it recorded the id since
  the last sync (elsewhere the dtype's lowest value) and the element-wise max wins. This is
  exact whenever, between two syncs, each id is recorded by a single rank — which holds when
  the loader splits the samples of an epoch disjointly across ranks. If two ranks record the
  same id in one epoch the larger value is kept (an approximation, never a hang).

``record`` never leaves the device: no ``.item()``, ``.cpu()``, ``.tolist()``, no boolean
indexing, no ``torch.unique``. Duplicate ids inside one call are resolved with a stable sort,
so every accumulation goes through ``index_put_(accumulate=True)`` (deterministic on CUDA) and
every state write stores identical values for duplicate ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

Reduce = Literal["sum", "max", "min", "masked_max"]
_ACCUMULATORS = ("sum", "max", "min")


@dataclass(frozen=True)
class _TableSpec:
    dtype: torch.dtype
    reduce: Reduce
    default: float


def _lowest(dtype: torch.dtype) -> float:
    return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min


def _highest(dtype: torch.dtype) -> float:
    return math.inf if dtype.is_floating_point else torch.iinfo(dtype).max


def _identity(spec: _TableSpec) -> float:
    return {"sum": 0, "max": _lowest(spec.dtype), "min": _highest(spec.dtype)}[spec.reduce]


def _world_size(group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class _Runs:
    """Groups the entries of one ``record`` call by id (stable, so call order is kept)."""

    def __init__(self, ids: torch.Tensor) -> None:
        b = ids.numel()
        sorted_ids, self.order = torch.sort(ids, stable=True)
        self.first = torch.ones(b, dtype=torch.bool, device=ids.device)
        self.first[1:] = sorted_ids[1:] != sorted_ids[:-1]
        self.run = torch.cumsum(self.first, 0) - 1
        last = torch.ones_like(self.first)
        last[:-1] = self.first[1:]
        pos = torch.arange(b, device=ids.device)
        tail = torch.where(last, pos, torch.full_like(pos, b)).flip(0)
        self.last_pos = torch.cummin(tail, 0).values.flip(0)
        self.inverse = torch.empty_like(self.order)
        self.inverse[self.order] = pos

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Per entry: the mean of all values of the same id in this call."""
        v = values[self.order]
        sums = torch.zeros_like(v).index_put_((self.run,), v, accumulate=True)
        counts = torch.zeros_like(v).index_put_((self.run,), torch.ones_like(v), accumulate=True)
        return (sums / counts.clamp_min(1))[self.run][self.inverse]

    def last(self, values: torch.Tensor) -> torch.Tensor:
        """Per entry: the value of the last entry of the same id in this call."""
        return values[self.order][self.last_pos][self.inverse]

    def previous(self, values: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """Per entry: the value of the previous entry of the same id, else ``before``."""
        v = values[self.order]
        shifted = torch.roll(v, 1)
        return torch.where(self.first, before[self.order], shifted)[self.inverse]


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
        float_dtype: torch.dtype = torch.float32,
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
        self._dirty = False  # pending holds records not folded yet (host-side flag)
        self._specs: dict[str, _TableSpec] = {}
        self._tables: dict[str, torch.Tensor] = {}
        self._pending: dict[str, torch.Tensor] = {}  # accumulators only, allocated lazily
        f, i32 = float_dtype, torch.int32
        for name in ("count", "logit_count", "correct_count", "forget_count"):
            self._add_table(name, i32, "sum")
        for name in ("loss_sum", "loss_sq_sum", "margin_sum", "gold_prob_sum", "gold_prob_sq_sum"):
            self._add_table(name, f, "sum")
        self._add_table("last_epoch", i32, "max", default=-1)
        self._add_table("ema_loss", f, "masked_max")
        self._add_table("last_loss", f, "masked_max")
        self._add_table("last_correct", torch.int8, "masked_max", default=-1)
        self._add_table("label", torch.int64, "masked_max", default=-1)
        self._add_table("last_pred", torch.int32, "masked_max", default=-1)

    # -- tables ---------------------------------------------------------------------------
    def _add_table(self, name: str, dtype: torch.dtype, reduce: Reduce, default: float = 0) -> None:
        """Declare a length-N table and how it is reduced across ranks."""
        if reduce not in (*_ACCUMULATORS, "masked_max"):
            raise ValueError(f"unknown reduction {reduce!r} for table {name!r}")
        spec = _TableSpec(dtype, reduce, default)
        self._specs[name] = spec
        self._tables[name] = torch.full((self.num_samples,), default, dtype=dtype, device=self.device)
        self._pending.clear()

    def _ensure_pending(self) -> dict[str, torch.Tensor]:
        if not self._pending:
            for name, spec in self._specs.items():
                if spec.reduce in _ACCUMULATORS:
                    self._pending[name] = torch.full_like(self._tables[name], _identity(spec))
        return self._pending

    def table(self, name: str, pending: bool = False) -> torch.Tensor:
        """The folded table ``name`` (or its not yet synced pending part). Do not modify."""
        return (self._ensure_pending() if pending else self._tables)[name]

    @property
    def accumulator_names(self) -> tuple[str, ...]:
        return tuple(k for k, spec in self._specs.items() if spec.reduce in _ACCUMULATORS)

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def _accumulators(self) -> dict[str, torch.Tensor]:
        """Where ``record`` accumulates: the pending copies, folded in at :meth:`sync`."""
        self._dirty = True
        return self._ensure_pending()

    @staticmethod
    def _accumulate(target: torch.Tensor, ids: torch.Tensor, values: torch.Tensor) -> None:
        target.index_put_((ids,), values.to(target.dtype), accumulate=True)

    # -- recording ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The epoch that following :meth:`record` calls belong to."""
        self.epoch = int(epoch)

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
        ids = ids.to(self.device, torch.long).reshape(-1)
        b = ids.numel()
        if b == 0:
            return
        loss = loss.detach().reshape(-1).to(self.device, self._tables["ema_loss"].dtype)
        if loss.numel() != b:
            raise ValueError(f"loss has {loss.numel()} entries for {b} ids")
        runs = _Runs(ids)
        acc = self._accumulators()
        seen_before = (self._tables["count"][ids] + acc["count"][ids]) > 0
        self._accumulate(acc["count"], ids, torch.ones_like(ids))
        self._accumulate(acc["loss_sum"], ids, loss)
        self._accumulate(acc["loss_sq_sum"], ids, loss * loss)
        acc["last_epoch"].index_fill_(0, ids, self.epoch)
        call_mean = runs.mean(loss)
        ema = self._tables["ema_loss"]
        smoothed = self.ema * ema[ids] + (1.0 - self.ema) * call_mean
        ema[ids] = torch.where(seen_before, smoothed, call_mean)
        self._tables["last_loss"][ids] = runs.last(loss)
        if targets is not None:
            targets = targets.to(self.device, torch.long).reshape(-1)
            if targets.numel() != b:
                raise ValueError(f"targets has {targets.numel()} entries for {b} ids")
            self._tables["label"][ids] = runs.last(targets)
        if logits is not None:
            if targets is None:
                raise ValueError("logits need targets")
            self._record_logits(acc, ids, runs, logits, targets)

    def _record_logits(
        self,
        acc: dict[str, torch.Tensor],
        ids: torch.Tensor,
        runs: _Runs,
        logits: torch.Tensor,
        targets: torch.Tensor,
    ) -> None:
        logits = logits.detach().to(self.device, torch.float32)
        if logits.dim() != 2 or logits.shape[0] != ids.numel():
            raise ValueError(f"logits must have shape ({ids.numel()}, C), got {tuple(logits.shape)}")
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, ledger has {self.num_classes}")
        index = targets[:, None]
        gold = logits.gather(1, index).squeeze(1)
        is_gold = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, index, True)
        other = logits.masked_fill(is_gold, -math.inf).amax(1)
        prob = torch.log_softmax(logits, 1).gather(1, index).squeeze(1).exp()
        predicted = logits.argmax(1)
        correct = (predicted == targets).to(torch.int8)
        self._tables["last_pred"][ids] = runs.last(predicted.to(torch.int32))
        self._accumulate(acc["logit_count"], ids, torch.ones_like(ids))
        self._accumulate(acc["margin_sum"], ids, gold - other)
        self._accumulate(acc["gold_prob_sum"], ids, prob)
        self._accumulate(acc["gold_prob_sq_sum"], ids, prob * prob)
        self._accumulate(acc["correct_count"], ids, correct)
        last_correct = self._tables["last_correct"]
        previous = runs.previous(correct, last_correct[ids])
        self._accumulate(acc["forget_count"], ids, (previous == 1) & (correct == 0))
        last_correct[ids] = runs.last(correct)

    # -- cross-rank -----------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Reduce pending records across ranks (if distributed) and fold them in.

        A collective when ``torch.distributed`` runs with world size > 1: call it on every
        rank. Idempotent: a second call without new records on any rank changes nothing and
        costs one 1-element all-reduce.
        """
        distributed = _world_size(self.process_group) > 1
        if not (self._dirty_anywhere() if distributed else self._dirty):
            return
        touched = self._ensure_pending()["count"] > 0
        if distributed:
            self._reduce_across_ranks(touched)
        self._dirty = False
        for name, pending in self._pending.items():
            spec, total = self._specs[name], self._tables[name]
            if spec.reduce == "sum":
                total += pending
            elif spec.reduce == "max":
                torch.maximum(total, pending, out=total)
            else:
                torch.minimum(total, pending, out=total)
            pending.fill_(_identity(spec))

    def _dirty_anywhere(self) -> bool:
        """Whether any rank recorded since the last sync (one 1-element all-reduce)."""
        flag = torch.tensor([int(self._dirty)], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.process_group)
        return bool(flag[0])

    def _reduce_across_ranks(self, touched: torch.Tensor) -> None:
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        for name, pending in self._pending.items():
            dist.all_reduce(pending, op=ops[self._specs[name].reduce], group=self.process_group)
        touched_anywhere = self._pending["count"] > 0
        for name, spec in self._specs.items():
            if spec.reduce != "masked_max":
                continue
            table = self._tables[name]
            contribution = torch.where(touched, table, torch.full_like(table, _lowest(spec.dtype)))
            dist.all_reduce(contribution, op=dist.ReduceOp.MAX, group=self.process_group)
            table.copy_(torch.where(touched_anywhere, contribution, table))

    # -- derived statistics ---------------------------------------------------------------
    @torch.no_grad()
    def stats(self, sync: bool = True) -> LedgerStats:
        """Derived statistics. With ``sync=True`` (default) pending records are synced first
        (a collective when distributed); with ``sync=False`` records since the last sync are
        left out."""
        if sync:
            self.sync()
        t = self._tables
        count = t["count"].clone()
        inv_n = count.to(torch.float32).clamp_min_(1).reciprocal_()
        inv_nl = t["logit_count"].to(torch.float32).clamp_min_(1).reciprocal_()
        mean_loss = t["loss_sum"] * inv_n
        confidence = t["gold_prob_sum"] * inv_nl
        seen, has_logits = count > 0, t["logit_count"] > 0
        return LedgerStats(
            epoch=self.epoch,
            num_seen=int(seen.sum()),
            num_with_logits=int(has_logits.sum()),
            seen=seen,
            has_logits=has_logits,
            count=count,
            mean_loss=mean_loss.float(),
            loss_var=_variance(t["loss_sq_sum"] * inv_n, mean_loss).float(),
            ema_loss=t["ema_loss"].to(torch.float32, copy=True),
            last_loss=t["last_loss"].to(torch.float32, copy=True),
            aum=(t["margin_sum"] * inv_nl).float(),
            confidence=confidence.float(),
            variability=_variance(t["gold_prob_sq_sum"] * inv_nl, confidence).sqrt_().float(),
            correct_frac=t["correct_count"] * inv_nl,
            forgetting=t["forget_count"].clone(),
            last_epoch=t["last_epoch"].clone(),
            labels=t["label"].clone(),
        )

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tables (folded and pending) plus settings, as tensors on the ledger's device."""
        return {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "ema": self.ema,
            "epoch": self.epoch,
            "tables": {k: v.clone() for k, v in self._tables.items()},
            "pending": {k: v.clone() for k, v in self._pending.items()} if self._dirty else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; raises ``KeyError`` naming anything missing.
        ``pending`` may be empty (nothing unsynced) or must hold every accumulator."""
        missing = [k for k in ("num_samples", "epoch", "tables") if k not in state]
        missing += [f"tables.{k}" for k in self._tables if k not in state.get("tables", {})]
        pending = state.get("pending") or {}
        if pending:
            missing += [f"pending.{k}" for k in self.accumulator_names if k not in pending]
        if missing:
            raise KeyError(f"ledger state is missing {', '.join(missing)}")
        if int(state["num_samples"]) != self.num_samples:
            raise ValueError(
                f"ledger state has {state['num_samples']} samples, this ledger {self.num_samples}"
            )
        for name, tensor in self._tables.items():
            tensor.copy_(state["tables"][name].to(self.device, tensor.dtype))
        self._pending.clear()
        for name, tensor in (self._ensure_pending() if pending else {}).items():
            tensor.copy_(pending[name].to(self.device, tensor.dtype))
        self._dirty = bool(pending)
        self.epoch = int(state["epoch"])
        self.ema = float(state.get("ema", self.ema))

    def to(self, device: torch.device | str) -> Ledger:
        """Move every table to ``device`` (in place); returns ``self``."""
        self.device = torch.device(device)
        self._tables = {k: v.to(self.device) for k, v in self._tables.items()}
        self._pending = {k: v.to(self.device) for k, v in self._pending.items()}
        return self
