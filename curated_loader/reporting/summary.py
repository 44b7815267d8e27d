"""Pure summaries of curation state: plain dicts and lists, no files, no plotting.

Each function takes a :class:`~curated_loader.reporting.checkpoint.CurationState` (or the
pieces of one) and returns JSON-ready values. :func:`summarize` gathers them into the
document the report writes as ``summary.json``.

Outcomes of the latest decision, per sample:

* ``kept`` — streamed in the next epoch (reason ``kept`` or ``unseen``);
* ``flagged`` — removed by a noise filter as likely mislabeled (reasons ``flagged_*``);
* ``pruned`` — skipped for one epoch by pruning (a random draw among well-learned samples).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..curation.decision import Decision, Reason
from ..curation.ledger import LedgerStats
from ..data.shards import ShardIndex
from .checkpoint import CurationState
from .evidence import Evidence, filter_evidence, rank_key

FLAGGED_CODES = tuple(int(r) for r in Reason if r.flagged)

# history keys -> timeline keys
_TIMELINE_KEYS = {
    "curation/kept": "kept",
    "curation/flagged": "flagged",
    "curation/pruned": "pruned",
    "curation/kept_frac": "kept_frac",
    "curation/weight_mean": "weight_mean",
    "curation/weight_std": "weight_std",
    "curation/weight_max": "weight_max",
    "curation/strength_mean": "strength_mean",
    "curation/next_epoch_batches": "next_epoch_batches",
}


def reason_name(code: int) -> str:
    """Lower-case name of a reason code (``"flagged_gmm"``), or ``"reason_<n>"`` if unknown."""
    try:
        return Reason(int(code)).name.lower()
    except ValueError:
        return f"reason_{int(code)}"


def flagged_mask(reason: torch.Tensor) -> torch.Tensor:
    """bool[N]: the sample's reason is a noise-filter flag."""
    return torch.isin(reason.long(), torch.tensor(FLAGGED_CODES, dtype=torch.long))


def pruned_mask(reason: torch.Tensor) -> torch.Tensor:
    return reason.long() == int(Reason.PRUNED)


def outcome_counts(decision: Decision) -> dict[str, int]:
    """``total``, ``kept``, ``flagged``, ``pruned``, ``unseen`` and one count per reason."""
    counts = decision.summary()
    per_reason = {r.name.lower(): int(counts[r.name.lower()]) for r in Reason}
    return {
        "total": decision.num_samples,
        "kept": int(decision.keep.sum()),
        "flagged": int(counts["flagged"]),
        "pruned": int(counts["pruned"]),
        "unseen": int(counts["unseen"]),
        "by_reason": per_reason,
    }


def _num(value: Any) -> float | int | None:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def timeline(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch end: ``epoch`` (the epoch just trained), ``decided_for`` (the epoch
    the decision is for), ``kept``, ``flagged``, ``pruned``, ``kept_frac`` and the weight
    spread over kept samples (``weight_mean``, ``weight_std``, ``weight_max``)."""
    rows = []
    for entry in history:
        epoch = int(entry.get("epoch", len(rows)))
        row: dict[str, Any] = {"epoch": epoch, "decided_for": epoch + 1}
        for source, name in _TIMELINE_KEYS.items():
            if source in entry:
                row[name] = _num(entry[source])
        rows.append(row)
    return rows


def distribution(values: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None) -> dict[str, Any]:
    """Count, mean, std and quantiles (min, 5, 25, 50, 75, 95 %, max) of ``values[mask]``."""
    v = torch.as_tensor(values).double().numpy()
    if mask is not None:
        v = v[torch.as_tensor(mask, dtype=torch.bool).numpy()]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"count": 0}
    qs = np.quantile(v, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]).tolist()
    return {
        "count": int(v.size),
        "mean": _num(v.mean()),
        "std": _num(v.std()),
        "min": _num(qs[0]), "q05": _num(qs[1]), "q25": _num(qs[2]), "median": _num(qs[3]),
        "q75": _num(qs[4]), "q95": _num(qs[5]), "max": _num(qs[6]),
    }


def outcome_masks(decision: Decision) -> dict[str, torch.Tensor]:
    """bool[N] per outcome: ``kept``, ``flagged``, ``pruned``."""
    return {"kept": decision.keep.bool(), "flagged": flagged_mask(decision.reason), "pruned": pruned_mask(decision.reason)}


def loss_margin_summary(stats: LedgerStats, decision: Decision) -> dict[str, dict[str, Any]]:
    """EMA loss (seen samples) and AUM (samples seen with logits) per outcome."""
    masks = outcome_masks(decision)
    return {
        "ema_loss": {name: distribution(stats.ema_loss, m & stats.seen) for name, m in masks.items()},
        "aum": {name: distribution(stats.aum, m & stats.has_logits) for name, m in masks.items()},
    }


def per_class(labels: torch.Tensor, decision: Decision) -> list[dict[str, Any]]:
    """Per given label (from the ledger; ``-1`` = never recorded): total, kept, flagged,
    pruned and the flagged fraction."""
    labels = labels.long()
    masks = outcome_masks(decision)
    rows = []
    for label in torch.unique(labels).tolist():
        in_class = labels == label
        total = int(in_class.sum())
        row = {"label": int(label), "total": total}
        for name, m in masks.items():
            row[name] = int((m & in_class).sum())
        row["flagged_frac"] = row["flagged"] / total if total else 0.0
        rows.append(row)
    return rows


def suspicious_order(decision: Decision, stats: LedgerStats, key: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ids, most suspicious first: flagged samples, then the other seen samples, then
    unseen ones; within each group by ``key`` descending (default: the decision's score; see
    :func:`~.evidence.rank_key` for a key that does not saturate), missing keys last. Ties
    keep id order."""
    key = decision.score if key is None else key
    key = key.double().nan_to_num(nan=-math.inf)
    flagged = flagged_mask(decision.reason)
    tier = torch.where(flagged, 0, torch.where(stats.seen, 1, 2))
    by_key = torch.sort(-key, stable=True).indices
    return by_key[torch.sort(tier[by_key], stable=True).indices]


def sample_provenance(index: ShardIndex | None, ids: list[int]) -> list[dict[str, Any]]:
    """``shard`` (URL), ``shard_index`` and ``position`` of each id (keys need a tar scan:
    see :func:`curated_loader.reporting.report.read_samples`)."""
    if index is None or not ids:
        return [{} for _ in ids]
    shard, pos = index.locate(np.asarray(ids, dtype=np.int64))
    return [{"shard": index.urls[s], "shard_index": int(s), "position": int(p)} for s, p in zip(shard, pos)]


def _evidence(state: CurationState) -> tuple[list[Evidence], torch.Tensor, torch.Tensor]:
    decision, stats = state.decision_or_neutral(), state.stats()
    evidence = filter_evidence(state.policies, stats, decision.reason)
    key, source = rank_key(evidence, decision.reason, stats.ema_loss.double().masked_fill(~stats.seen, math.nan))
    return evidence, key, source


def suspicious_samples(state: CurationState, k: int = 24, index: ShardIndex | None = None) -> list[dict[str, Any]]:
    """The ``k`` most suspicious samples with their evidence: id, given label (ledger),
    predicted label and the epoch it was predicted in (the model's prediction when the
    sample was last trained on: for flagged samples, the epoch before they were flagged),
    last prediction correct, the ranking evidence (``evidence`` names the statistic,
    ``evidence_value`` and its ``percentile`` among judged samples), the decision's score,
    reason, EMA loss, AUM, times seen, weight, provenance."""
    decision, stats = state.decision_or_neutral(), state.stats()
    evidence, key, source = _evidence(state)
    percentiles = [ev.percentile() for ev in evidence]
    ids = suspicious_order(decision, stats, key)[: max(int(k), 0)].tolist()
    predicted = prediction_table(state)
    last_correct = state.ledger.table("last_correct") if "last_correct" in state.ledger.table_names else None
    rows = []
    for sid, where in zip(ids, sample_provenance(index, ids)):
        seen_logits = bool(stats.has_logits[sid])
        label = int(stats.labels[sid])
        correct = int(last_correct[sid]) if last_correct is not None else -1
        has_prediction = predicted is not None and int(predicted[sid]) >= 0
        which = int(source[sid])
        rows.append({
            "id": int(sid),
            "given": label if label >= 0 else None,
            "predicted": int(predicted[sid]) if has_prediction else None,
            "predicted_epoch": int(stats.last_epoch[sid]) if has_prediction else None,
            "last_correct": None if correct < 0 else bool(correct),
            "evidence": evidence[which].name if evidence else "ema_loss",
            "evidence_value": _num(key[sid]),
            "percentile": _num(percentiles[which][sid]) if evidence else None,
            "score": _num(decision.score[sid]),
            "reason": reason_name(int(decision.reason[sid])),
            "ema_loss": _num(stats.ema_loss[sid]) if bool(stats.seen[sid]) else None,
            "aum": _num(stats.aum[sid]) if seen_logits else None,
            "seen": int(stats.count[sid]),
            "weight": _num(decision.weight[sid]),
            **where,
        })
    return rows


def filter_summaries(state: CurationState) -> list[dict[str, Any]]:
    """Per noise filter: its settings, its flagging rule, the evidence it is ranked by, how
    many samples it flagged and the smallest evidence value among them (with percentile)."""
    decision = state.decision_or_neutral()
    rows = []
    for ev in filter_evidence(state.policies, state.stats(), decision.reason):
        mine = (decision.reason.long() == int(ev.reason)) & ~torch.isnan(ev.values)
        lowest = int(torch.nonzero(mine).flatten()[ev.values[mine].argmin()]) if mine.any() else None
        rows.append({
            "reason": reason_name(int(ev.reason)), "policy": ev.policy, "rule": ev.rule, "evidence": ev.name,
            "settings_recorded": ev.recorded, "flagged": int(mine.sum()),
            "lowest_flagged": _num(ev.values[lowest]) if lowest is not None else None,
            "lowest_flagged_percentile": _num(ev.percentile()[lowest]) if lowest is not None else None,
        })
    return rows


def prediction_table(state: CurationState) -> torch.Tensor | None:
    """The ledger's predicted-label table if it keeps one (``pred``/``prediction``/
    ``last_pred``), else ``None``."""
    for name in ("prediction", "pred", "last_pred", "predicted"):
        if name in state.ledger.table_names:
            return state.ledger.table(name)
    return None


def summarize(state: CurationState, index: ShardIndex | None = None, top_k: int = 24) -> dict[str, Any]:
    """Everything the report shows, as one JSON-ready dict."""
    decision, stats = state.decision_or_neutral(), state.stats()
    return {
        "checkpoint": state.path,
        "state_key": state.state_key,
        "num_samples": state.num_samples,
        "num_shards": index.num_shards if index is not None else None,
        "num_classes": state.ledger.num_classes,
        "has_decision": state.decision is not None,
        "decision_epoch": int(decision.epoch),
        "ledger_epoch": int(state.ledger.epoch),
        "trainer_epoch": state.trainer_epoch,
        "global_step": state.global_step,
        "plan": {k: v for k, v in state.plan.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "seen": int(stats.num_seen),
        "seen_with_logits": int(stats.has_logits.sum()),
        "counts": outcome_counts(decision),
        "reweighted": int((decision.keep & ((decision.weight - 1.0).abs() > 1e-6)).sum()),
        "weights_kept": distribution(decision.weight, decision.keep),
        "timeline": timeline(state.history),
        "distributions": loss_margin_summary(stats, decision),
        "per_class": per_class(stats.labels, decision),
        "filters": filter_summaries(state),
        "top_suspicious": suspicious_samples(state, top_k, index),
        "has_predictions": prediction_table(state) is not None,
    }
