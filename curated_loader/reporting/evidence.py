"""The evidence each noise filter judged a sample by, to rank suspects by a score that does not
saturate.

A decision's ``score`` is the flagging filter's own score; for the GMM filter that is
``1 - p(clean)``, which is exactly 1.0 for most flagged samples (the posterior saturates), so
ranking by it just lists the lowest ids. Reports rank instead by the statistic the filter
looked at — its loss (``loss_key``), ``-AUM`` or ``1 - confidence`` — higher = more
suspicious, with its percentile among the samples that filter judged, and show the filter's
own rule (e.g. ``p(clean) <= tau``) beside the smallest value it flagged.

The filters' settings come from the curation state (``policies``, recorded by the callback);
for states that lack them, the policy classes' defaults are assumed (and said so).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..curation.decision import Reason
from ..curation.ledger import LedgerStats
from ..curation.policies.noise import AUMFilter, CartographyFilter, GMMFilter, SmallLossFilter

_FILTERS = {
    Reason.FLAGGED_SMALL_LOSS: SmallLossFilter,
    Reason.FLAGGED_GMM: GMMFilter,
    Reason.FLAGGED_AUM: AUMFilter,
    Reason.FLAGGED_CARTOGRAPHY: CartographyFilter,
}
_REASON_OF = {cls.__name__: reason for reason, cls in _FILTERS.items()}


@dataclass(frozen=True)
class Evidence:
    """One noise filter's per-sample evidence: ``values`` float64[N] (higher = more suspicious,
    NaN where the filter judges nothing), what they are (``name``), the filter (``policy``)
    and its flagging ``rule``; ``recorded`` is False when the settings are class defaults."""

    reason: Reason
    name: str
    values: torch.Tensor
    policy: str
    rule: str
    recorded: bool

    def percentile(self) -> torch.Tensor:
        """float64[N]: percent of judged samples whose value is <= this one (NaN if unjudged)."""
        judged = ~torch.isnan(self.values)
        ordered = torch.sort(self.values[judged]).values
        out = torch.full_like(self.values, math.nan)
        if ordered.numel():
            rank = torch.searchsorted(ordered, self.values[judged], right=True)
            out[judged] = 100.0 * rank.double() / ordered.numel()
        return out


def _settings(cls: type, recorded: dict[str, Any] | None) -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {**defaults, **{k: v for k, v in (recorded or {}).items() if k in defaults}}


def _rule(cls: type, s: dict[str, Any]) -> tuple[str, str]:
    """(evidence name, flagging rule) of a filter class with settings ``s``."""
    if cls is SmallLossFilter:
        return s["loss_key"], f"flags the {100 * s['quantile']:g}% judged samples with the largest {s['loss_key']}"
    if cls is GMMFilter:
        return s["loss_key"], (f"flags p(clean) <= tau = {s['tau']:g} under a two-component GMM of the "
                               f"normalized {s['loss_key']}")
    if cls is AUMFilter:
        cut = f"the {s['quantile']:g} quantile" if s.get("quantile") is not None else f"{s['threshold']:g}"
        return "-aum", f"flags AUM (mean margin) < {cut}"
    return "1 - confidence", f"flags confidence < {s['max_confidence']:g} and variability < {s['max_variability']:g}"


def _values(cls: type, s: dict[str, Any], stats: LedgerStats) -> torch.Tensor:
    if cls in (SmallLossFilter, GMMFilter):
        values, judged = getattr(stats, s["loss_key"]), stats.seen
    elif cls is AUMFilter:
        values, judged = -stats.aum, stats.has_logits
    else:
        values, judged = 1.0 - stats.confidence, stats.has_logits
    return values.double().masked_fill(~judged, math.nan)


def filter_evidence(policies: dict[str, Any], stats: LedgerStats, reasons: torch.Tensor) -> list[Evidence]:
    """The evidence of every noise filter in ``policies["noise_filters"]`` (in plan order), or,
    when none are recorded, of the filter class behind each flag reason in ``reasons``."""
    recorded = [p for p in policies.get("noise_filters") or [] if p and p.get("class") in _REASON_OF]
    if recorded:
        entries = [(_REASON_OF[p["class"]], p, True) for p in recorded]
    else:
        present = set(torch.unique(reasons.long()).tolist())
        entries = [(reason, None, False) for reason in _FILTERS if int(reason) in present]
    out = []
    for reason, params, is_recorded in entries:
        cls = _FILTERS[reason]
        s = _settings(cls, params)
        name, rule = _rule(cls, s)
        shown = ", ".join(f"{k}={v!r}" for k, v in s.items())
        out.append(Evidence(reason, name, _values(cls, s, stats), f"{cls.__name__}({shown})", rule, is_recorded))
    return out


def rank_key(evidence: list[Evidence], reasons: torch.Tensor, fallback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the evidence value it is ranked by — the flagging filter's for flagged
    samples, the first filter's for the others, ``fallback`` (EMA loss) without filters — as
    float64[N] (NaN = no evidence), and int64[N]: which entry of ``evidence`` it came from."""
    source = torch.zeros(reasons.shape[0], dtype=torch.long)
    if not evidence:
        return fallback.double().clone(), source
    key = evidence[0].values.clone()
    for i, ev in enumerate(evidence):
        mine = reasons.long() == int(ev.reason)
        key = torch.where(mine, ev.values, key)
        source[mine] = i
    return key, source


__all__ = ["Evidence", "filter_evidence", "rank_key"]
