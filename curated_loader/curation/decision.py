"""What a curation plan produces: one :class:`Decision` per epoch, and the policy parts it is
assembled from. Every sample carries a reason code and a score so reports can explain it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from typing import Any

import torch

from ..data.snapshot import _BIT_WEIGHTS, _STRENGTH_LEVELS, PackedDecision, packed_sections
from .lazy import Deferred, LazyField, replaced, resolved_state
from .reducer import GroupReducer, Reducer


class Reason(IntEnum):
    """Why a sample is (not) in the next epoch. Stored as int8."""

    KEPT = 0
    UNSEEN = 1  # kept: never recorded, so no policy could judge it
    FLAGGED_SMALL_LOSS = 2
    FLAGGED_GMM = 3
    FLAGGED_AUM = 4
    FLAGGED_CARTOGRAPHY = 5
    PRUNED = 6

    @property
    def flagged(self) -> bool:
        return self.name.startswith("FLAGGED_")


#: Samples packed or unpacked per step of :meth:`Decision.gathered` (a multiple of 16): its
#: workspace is about 30 bytes per sample of one step, whatever N.
GATHER_CHUNK = 1 << 20


def _pack_into(out: torch.Tensor, keep: torch.Tensor, weight: torch.Tensor, strength: torch.Tensor, size: int) -> None:
    """Write ``pack_decision`` of the first ``len(keep)`` of ``size`` samples into ``out`` (zeroed:
    the padding packs as keep 0, weight 0, strength 0), :data:`GATHER_CHUNK` samples per step,
    encoded straight into it (a chunk-sized scratch; the same roundings as ``pack_decision``)."""
    n = keep.numel()
    bits = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=out.device)
    flags = torch.empty(min(n, GATHER_CHUNK) + 15, dtype=torch.uint8, device=out.device)
    scaled = torch.empty(min(n, GATHER_CHUNK), dtype=torch.float32, device=out.device)
    for start in range(0, n, GATHER_CHUNK):
        end = min(n, start + GATHER_CHUNK)
        count, padded = end - start, 16 * math.ceil((end - start) / 16)
        mask, half, codes = (out[s] for s in packed_sections(size, start, padded))
        half.view(torch.float16)[:count].copy_(weight[start:end])
        torch.mul(strength[start:end], _STRENGTH_LEVELS, out=scaled[:count])
        codes[:count].copy_(scaled[:count].round_())
        flags[:count].copy_(keep[start:end])
        flags[count:padded].zero_()
        torch.sum(flags[:padded].view(-1, 8).mul_(bits), 1, dtype=torch.uint8, out=mask)


_COLUMN_DTYPES = {"keep": torch.bool, "weight": torch.float32, "strength": torch.float32}


def _steps(count: int) -> range:
    return range(0, count, GATHER_CHUNK)


def _keep_flags(mask: torch.Tensor, start: int, end: int, bits: torch.Tensor) -> torch.Tensor:
    """uint8 flags (nonzero: kept) of ids ``[start, end)`` from a row's keep bitmask; ``start``
    a multiple of 8, ``bits`` the bit weights (``_BIT_WEIGHTS``)."""
    return (mask[start // 8 : (end + 7) // 8, None] & bits).view(-1)[: end - start]


def _decoded(packed: PackedDecision, column: str, total: int) -> torch.Tensor:
    """Column ``column`` (keep, weight or strength) of all ``total`` ids from the gathered
    rows, decoded as ``unpack_decision`` decodes, :data:`GATHER_CHUNK` ids per step straight
    into the result (no decoded temporaries)."""
    device = packed.rows.device
    out = torch.empty(total, dtype=_COLUMN_DTYPES[column], device=device)
    bits = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=device)
    for rank, (lo, hi) in enumerate(packed.ranges):
        mask, half, codes = packed.columns(rank)
        for start in _steps(hi - lo):
            end = min(hi - lo, start + GATHER_CHUNK)
            into = out[lo + start : lo + end]
            if column == "keep":  # nonzero -> True
                into.copy_(_keep_flags(mask, start, end, bits))
            elif column == "weight":
                into.copy_(half[start:end])
            else:
                into.copy_(codes[start:end]).div_(_STRENGTH_LEVELS)
    return out


def _weights_finite(packed: PackedDecision) -> bool:
    """Whether every gathered float16 weight is finite (its exponent bits not all ones)."""
    for rank, (lo, hi) in enumerate(packed.ranges):
        half = packed.columns(rank)[1].view(torch.int16)
        for start in _steps(hi - lo):
            if not bool(half[start : start + GATHER_CHUNK].bitwise_and(0x7FFF).amax() < 0x7C00):
                return False
    return True


def _into(op: Callable[..., torch.Tensor], *args: Any, buffer: torch.Tensor) -> torch.Tensor:
    """``op(*args)`` written into ``buffer``'s memory (at least as long as the result): the
    op's ``out=`` is an empty view of it, which the op resizes (no new memory)."""
    return op(*args, out=buffer[:0])


def _kept_sums(packed: PackedDecision, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``[kept, Σ weight, Σ weight², Σ strength]`` over the kept ids of row ``rank``
    (values as decoded), and ``[max weight]`` (``-inf`` when none is kept)."""
    device = packed.rows.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    top = torch.full((1,), -math.inf, dtype=torch.float64, device=device)
    bits = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=device)
    lo, hi = packed.ranges[rank]
    mask, half, codes = packed.columns(rank)
    size = min(hi - lo, GATHER_CHUNK)
    wide = torch.empty(2, size, dtype=torch.float64, device=device)  # these buffers are reused by every step
    positions = torch.empty(size, dtype=torch.int64, device=device)
    kept_half, kept_codes = torch.empty_like(half[:size]), torch.empty_like(codes[:size])
    scaled = torch.empty(size, dtype=torch.float32, device=device)
    for start in _steps(hi - lo):
        end = min(hi - lo, start + GATHER_CHUNK)
        kept = _into(torch.nonzero, _keep_flags(mask, start, end, bits), buffer=positions).view(-1)  # the kept positions
        count = kept.numel()
        if count:
            weight, other = wide[0, :count], wide[1, :count]
            weight.copy_(_into(torch.index_select, half[start:end], 0, kept, buffer=kept_half))
            total, squares = weight.sum(), torch.square(weight, out=other).sum()
            kept_strength = scaled[:count].copy_(_into(torch.index_select, codes[start:end], 0, kept, buffer=kept_codes))
            strength = other.copy_(kept_strength.div_(_STRENGTH_LEVELS))
            sums += torch.stack([weight.new_tensor(count), total, squares, strength.sum()])
            top = torch.maximum(top, weight.amax().reshape(1))
    return sums, top


@dataclass(frozen=True)
class NoisePart:
    """A noise filter's verdict: ``flagged`` bool[N] (likely mislabeled), ``score`` float32[N]
    (higher = more suspicious), the reason code it stands for, and optional scalar ``info``
    about how it decided (logged as ``curation/<name>``). The plan may write into ``score``
    unless it shares memory with the statistics (then it copies it)."""

    flagged: torch.Tensor
    score: torch.Tensor
    reason: Reason
    info: dict[str, float] | None = None


@dataclass(frozen=True)
class PrunePart:
    """A pruning draw: ``pruned`` bool[N] (skipped this epoch) and ``factor`` float32[N]
    (loss-weight rescale of the kept samples, 1 elsewhere)."""

    pruned: torch.Tensor
    factor: torch.Tensor


@dataclass(frozen=True)
class WeightPart:
    """Per-sample weights float32[N] with mean 1 over the samples they were computed for;
    ``as_counts`` asks the plan to deliver them as integer resampling counts."""

    weight: torch.Tensor
    as_counts: bool = False


@dataclass(frozen=True)
class StrengthPart:
    """Per-sample augmentation strength float32[N] in [0, 1]."""

    strength: torch.Tensor


@dataclass(frozen=True)
class Decision:
    """The curation decision for one epoch (tensors of length N on the stats' device).

    * ``keep`` — the sample is streamed this epoch (not flagged, not pruned).
    * ``weight`` — loss weight; 0 for samples not kept. Without pruning it has mean 1 over kept
      samples. With pruning it has mean 1 over the *non-flagged* samples in expectation over the
      draw (``sum(weight)`` ≈ number of non-flagged samples): the 1/(1-r) rescale of pruning is
      what keeps ``sum(weight * loss)`` an unbiased estimate of the full non-flagged sum.
    * ``counts`` — with resampling delivery, int32 repeat counts per sample (expectation =
      the weight); ``weight`` then holds the same counts as float.
    * ``strength`` — augmentation strength in [0, 1].
    * ``reason`` — int8 :class:`Reason` code; ``score`` — the suspicion score of the noise
      filter that flagged the sample, else of the first active noise filter, else the EMA loss.
    * ``info`` — scalars the policies report about how they decided (e.g. ``filter_guard``).

    Over a sharded ledger (:meth:`gathered`) ``keep``/``weight``/``strength``/``counts`` cover
    all N ids on every rank (weight rounded to float16, strength to 1/255, as the snapshot
    stores them), while ``reason`` and ``score`` stay the owner's slice, ids ``[offset,
    offset + len(reason))``; ``reason_counts`` holds the per-reason counts over all ids and
    ``kept_moments`` the sums :meth:`kept_summary` reads. Those full-length columns are decoded
    from the gathered bytes when first read: publishing, :meth:`summary` and
    :meth:`kept_summary` read none of them, so a rank holds 3.125 B per id, not 9.
    """

    keep: torch.Tensor = LazyField()
    weight: torch.Tensor = LazyField()
    strength: torch.Tensor = LazyField()
    reason: torch.Tensor
    score: torch.Tensor
    epoch: int
    counts: torch.Tensor | None = LazyField(default=None)
    info: dict[str, float] = field(default_factory=dict)
    offset: int = 0
    reason_counts: torch.Tensor | None = None
    kept_moments: torch.Tensor | None = None  # float64 [kept, Σw, Σw², max w, Σ strength] over kept ids

    def __getstate__(self) -> dict[str, Any]:
        state = resolved_state(self, ["keep", "weight", "strength", "counts"])
        state.pop("_packed", None)  # publishing an unpickled copy encodes its columns
        return state

    @property
    def owner_local(self) -> bool:
        """Whether ``reason``/``score`` cover only this rank's slice of the ids."""
        return self.reason.shape[0] != self.num_samples

    @property
    def num_samples(self) -> int:
        keep = self.__dict__["keep"]
        return keep.length if isinstance(keep, Deferred) else int(keep.shape[0])

    @classmethod
    def keep_all(cls, num_samples: int, epoch: int = 0, device: torch.device | str = "cpu") -> Decision:
        """The neutral decision: everything kept, weight 1, strength 0, reason UNSEEN."""
        return cls(
            keep=torch.ones(num_samples, dtype=torch.bool, device=device),
            weight=torch.ones(num_samples, dtype=torch.float32, device=device),
            strength=torch.zeros(num_samples, dtype=torch.float32, device=device),
            reason=torch.full((num_samples,), int(Reason.UNSEEN), dtype=torch.int8, device=device),
            score=torch.zeros(num_samples, dtype=torch.float32, device=device),
            epoch=epoch,
        )

    def summary(self) -> dict[str, int]:
        """Counts per outcome: ``kept``, ``flagged``, ``pruned``, ``unseen`` and one entry per
        reason code (lower-case name), over all ids. One host sync."""
        counts = self.reason_counts
        per_reason = (torch.bincount(self.reason.long(), minlength=len(Reason)) if counts is None else counts).tolist()
        out = {r.name.lower(): int(per_reason[r]) for r in Reason}
        out["kept"] = out["kept"] + out["unseen"]
        out["flagged"] = sum(int(per_reason[r]) for r in Reason if r.flagged)
        return out

    def kept_summary(self) -> dict[str, float]:
        """Over the kept ids: ``kept`` (their number), ``weight_mean``, ``weight_std``
        (unbiased), ``weight_max`` and ``strength_mean`` (0 where undefined). A gathered decision
        answers from ``kept_moments`` (no decode); any other from its columns."""
        if self.kept_moments is None:
            kept_weights = self.weight[self.keep]
            k = kept_weights.numel()
            return {
                "kept": float(k),
                "weight_mean": float(kept_weights.mean()) if k else 0.0,
                "weight_std": float(kept_weights.std()) if k > 1 else 0.0,
                "weight_max": float(kept_weights.max()) if k else 0.0,
                "strength_mean": float(self.strength[self.keep].mean()) if k else 0.0,
            }
        k, total, squares, top, strength = (float(v) for v in self.kept_moments)
        mean = total / k if k else 0.0
        return {
            "kept": k,
            "weight_mean": mean,
            "weight_std": math.sqrt(max(squares - k * mean * mean, 0.0) / (k - 1)) if k > 1 else 0.0,
            "weight_max": top if k else 0.0,
            "strength_mean": strength / k if k else 0.0,
        }

    def gathered(self, reducer: Reducer) -> Decision:
        """The decision over all N ids, on every rank, from each rank's decision over its own
        slice (identity for a dense decision). One all-gather (on the CPU one broadcast per
        rank, in place: :meth:`GroupReducer.all_gather_rows`) of the snapshot's compact
        format (``pack_decision``: keep bit, float16 weight, uint8 strength; 3.125 B per
        sample, slices padded to a common multiple of 16), one ``all_reduce`` of the per-reason
        counts and the kept ids' weight sums, one of their largest weight. ``keep``, ``weight``,
        ``strength`` and ``counts`` are decoded from the gathered bytes when first read. Every
        rank raises alike if a weight exceeds float16's range."""
        if not isinstance(reducer, GroupReducer):
            return self
        size = 16 * math.ceil(max(hi - lo for lo, hi in reducer.ranges) / 16)
        device = self.keep.device
        rows = torch.empty(len(reducer.ranges), size * 25 // 8, dtype=torch.uint8, device=device)
        own = rows[reducer.rank].zero_()
        _pack_into(own, self.keep, self.weight, self.strength, size)
        reducer.all_gather_rows(rows)
        packed = PackedDecision(rows, tuple(reducer.ranges))
        if not _weights_finite(packed):
            raise ValueError(f"a decision weight exceeds {torch.finfo(torch.float16).max:g}, the largest float16 "
                             "(the snapshot's format)")
        sums, top = _kept_sums(packed, reducer.rank)
        reason_counts = torch.bincount(self.reason, minlength=len(Reason)).to(torch.float64)
        totals = reducer.sum(torch.cat([reason_counts, sums]))
        top = reducer.max(top)
        total = reducer.total
        columns = {name: Deferred(lambda name=name: _decoded(packed, name, total), length=total) for name in _COLUMN_DTYPES}
        weight = columns["weight"]
        counts = None if self.counts is None else Deferred(lambda: weight.value().to(torch.int32), length=total)
        decision = replace(self, **columns, counts=counts, offset=reducer.offset,
                           reason_counts=totals[: len(Reason)].to(torch.int64),
                           kept_moments=torch.cat([totals[len(Reason) : len(Reason) + 3], top, totals[-1:]]))
        object.__setattr__(decision, "_packed", packed)
        return decision

    def whole(self, reducer: Reducer) -> Decision:
        """This decision with ``reason`` and ``score`` over all N ids too (identity unless
        :attr:`owner_local`): float32 (score, reason) pairs, 8 B per sample, gathered with
        :meth:`GroupReducer.all_gather`, for what reports read — checkpoints and the final state, not every epoch."""
        if not self.owner_local or not isinstance(reducer, GroupReducer):
            return self
        size = max(hi - lo for lo, hi in reducer.ranges)
        local = torch.zeros(2, size, device=self.score.device)
        local[0, : self.score.shape[0]] = self.score
        local[1, : self.reason.shape[0]] = self.reason
        parts = [part[:, : hi - lo] for part, (lo, hi) in zip(reducer.all_gather(local), reducer.ranges)]
        score, reason = torch.cat(parts, 1)
        reason = reason.to(self.reason.dtype)
        return replaced(self, reason=reason, score=score, offset=0)  # keep/weight/strength stay undecoded until read

    def publish_to(self, snapshot: Any) -> None:
        """Write keep/weight/strength into a ``CurationSnapshot`` as version ``epoch``.

        The first publish of a :meth:`gathered` decision copies the gathered bytes as they are
        (``CurationSnapshot.publish_packed``: no decode, no re-encode) and then lets them go;
        any other publish encodes the tensors (``CurationSnapshot.publish``)."""
        packed = self.__dict__.get("_packed")
        if packed is None:
            snapshot.publish(self.keep, self.weight, self.strength, version=self.epoch)
            return
        snapshot.publish_packed(packed, version=self.epoch)
        object.__setattr__(self, "_packed", None)  # 3.125 B per sample, held only until published

    def to(self, device: torch.device | str) -> Decision:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return Decision(**moved)

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Decision:
        """Inverse of :meth:`state_dict`; raises ``KeyError`` naming missing entries."""
        optional = ("counts", "info", "offset", "reason_counts", "kept_moments")
        required = [f.name for f in fields(cls) if f.name not in optional]
        missing = [k for k in required if k not in state]
        if missing:
            raise KeyError(f"decision state is missing {', '.join(missing)}")
        return cls(**{k: state[k] for k in required}, counts=state.get("counts"), info=dict(state.get("info", {})),
                   offset=int(state.get("offset", 0)), reason_counts=state.get("reason_counts"),
                   kept_moments=state.get("kept_moments"))
