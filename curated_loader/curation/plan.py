"""The curation plan: noise filter -> prune -> reweight -> augmentation strength.

Weights and normalization. Let S be the samples no noise filter flagged. Reweighting
computes weights ``v`` with mean 1 over S (pruning has not happened yet, so ``v`` does not
depend on the draw). Pruning then multiplies the kept well-learned samples by ``1/(1-r)``
and zeroes the pruned ones: ``weight = v * factor`` on kept samples, 0 elsewhere. Hence
``E[sum_kept weight * loss] = sum_S v * loss`` — the InfoBatch rescale stays unbiased, and
``sum(weight)`` equals ``|S|`` in expectation. Normalizing to mean 1 over the *kept*
samples instead would scale the rescale away. Without pruning, kept = S and the weights
have mean 1 over kept samples. The reweight clip bounds ``v``; the prune factor comes after
it, so a final weight may reach ``w_max / (1 - r)``.

Randomness. Each stage has its own seed, mixed from ``(seed, epoch, stage)``; nothing
global is touched. The stages that draw per sample (InfoBatch's prune draw, resampling
counts, probes) draw per *global id* (:class:`~curated_loader.curation.draws.IdDraws`: a
counter-based hash of the stage's seed and the id), so a plan over a sharded ledger draws
exactly what the dense plan draws; a policy's function also gets a ``torch.Generator`` seeded
alike. Equal stats, seed and epoch give a bit-identical decision on every rank; other epochs
draw differently.

Sharded ledgers. Given a :class:`~curated_loader.curation.sharded.ShardedLedger` (or its
:class:`~curated_loader.curation.sharded.OwnedStats`), every rank decides the ids it owns;
global quantities (means, counts, extremes, histograms, exact quantiles) come from small
collectives through ``stats.reducer``, and :meth:`Decision.gathered` hands every rank the
whole decision (docs/scale.md, "Plans over a sharded ledger").
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from typing import Any

import torch

from ..checks import ConfigError, Range
from .decision import Decision, NoisePart, Reason
from .draws import IdDraws, uniform_draws
from .lazy import replaced
from .ledger import Ledger, LedgerStats
from .masking import fill_, in_steps, select_, zero_outside_
from .policies.augment import AugmentStrength
from .policies.prune import InfoBatchPrune
from .policies.reweight import Reweight, stochastic_round
from .reducer import Reducer
from .reduction import DEFAULT_REDUCTION, check_reduction
from .schedule import Policy
from .sharded import ShardedLedger

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1
#: Where a seed drawn for ``seed=None`` is exported, so processes launched from this one
#: (Lightning's DDP ranks re-run the script with a copy of the environment) use the same.
SEED_ENV = "CURATED_LOADER_SEED"
_STAGE_PRUNE, _STAGE_REWEIGHT, _STAGE_AUGMENT, _STAGE_COUNTS, _STAGE_NOISE = range(5)
_STAGE_PROBE = 1 << 16  # above every noise filter's stage (_STAGE_NOISE + index)


def derive_seed(seed: int, epoch: int, stage: int = 0) -> int:
    """A 63-bit seed from ``(seed, epoch, stage)`` (splitmix64 finalizer; process-independent)."""
    x = (
        seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + (stage + 1) * 0x94D049BB133111EB
    ) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or for ``None`` the run's seed: Lightning's ``PL_GLOBAL_SEED`` (set
    by ``seed_everything``) or :data:`SEED_ENV` when either is set, else a seed drawn once,
    logged and exported in :data:`SEED_ENV`. Every rank must decide alike, so in a
    multi-process run (``WORLD_SIZE`` > 1) without a shared seed it raises :class:`ConfigError`."""
    if seed is not None:
        if isinstance(seed, bool) or not hasattr(seed, "__index__"):
            raise ConfigError("seed", f"must be an integer or None, got {seed!r}")
        return int(seed)
    for var in ("PL_GLOBAL_SEED", SEED_ENV):
        if os.environ.get(var):
            return int(os.environ[var])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("seed", "is None in a multi-process run and no shared seed (PL_GLOBAL_SEED) is set: "
                          "set seed so that every rank makes the same decisions")
    drawn = random.SystemRandom().randrange(2**31)
    os.environ[SEED_ENV] = str(drawn)
    log.warning("seed is None: drew seed %d (set seed=%d to repeat this run)", drawn, drawn)
    return drawn


def _writable_score(score: torch.Tensor, stats: LedgerStats) -> torch.Tensor:
    """A filter's ``score`` for the plan to write into: itself when it is a dense array of its
    own (the built-in filters make a new one), a copy when it shares memory with a statistic."""
    memory = score.untyped_storage().data_ptr()
    held = (stats.seen, stats.has_logits, *stats.computed().values())
    shared = any(v.untyped_storage().data_ptr() == memory for v in held)
    return score.clone() if shared or not score.is_contiguous() else score


def _merge_flags(part: NoisePart, first: bool, score: torch.Tensor, reason: torch.Tensor, keep: torch.Tensor) -> None:
    """Merge a noise filter's flags into ``keep`` and ``reason`` (and, unless it is the
    first filter's, its scores into ``score`` where it flags first), in steps: no full-length
    mask of the newly flagged."""
    for score_part, reason_part, keep_part, flagged, part_score in in_steps(score, reason, keep, part.flagged, part.score):
        newly = flagged & keep_part
        if not first:
            select_(score_part, newly, part_score)
        fill_(reason_part, newly, int(part.reason))
        fill_(keep_part, flagged, False)


class CurationPlan:
    """Compose policies and turn ledger statistics into one :class:`Decision` per epoch.

    ``noise_filter`` may be one filter or a sequence: a sample is flagged if any active
    filter flags it, and its reason is the first such filter's. ``num_epochs`` is needed by
    schedules with a cooldown (InfoBatch's annealing). ``seed=None`` uses the run's seed or
    draws one (see :func:`resolve_seed`). ``reduction`` is how the training
    loss combines per-sample losses and weights (``"normalized"``: ``Σ w·ℓ / Σ w``;
    ``"mean"``: ``mean(w·ℓ)``, upstream InfoBatch's; see :mod:`curated_loader.curation.reduction`);
    ``curated_loss`` uses it unless told otherwise.

    Probes: a flagged sample is not trained, so its statistics would freeze and its flag could
    never clear. With ``probe_every=k`` every ``k``-th epoch (from the first one with flags)
    a random subset of the flagged samples, at most ``probe_fraction`` of all samples, is
    streamed with weight 0: it is scored (its loss and logits recorded) but not trained, so
    the filter can re-admit it. The probes are counted as sample passes like any other.
    """

    def __init__(
        self,
        noise_filter: Policy | Sequence[Policy] | None = None,
        prune: InfoBatchPrune | None = None,
        reweight: Reweight | None = None,
        augment: AugmentStrength | None = None,
        seed: int | None = 0,
        num_epochs: int | None = None,
        reduction: str = DEFAULT_REDUCTION,
        probe_every: int = 0,
        probe_fraction: float = 0.05,
    ) -> None:
        Range(1, optional=True)("num_epochs", num_epochs)
        Range(0)("probe_every", probe_every)
        Range(0.0, 1.0)("probe_fraction", probe_fraction)
        if noise_filter is None:
            noise_filter = ()
        self.noise_filters: tuple[Policy, ...] = (
            (noise_filter,) if isinstance(noise_filter, Policy) else tuple(noise_filter)
        )
        self.prune = prune
        self.reweight = reweight
        self.augment = augment
        self.seed = resolve_seed(seed)
        self.num_epochs = num_epochs
        self.reduction = check_reduction(reduction)
        self.probe_every = int(probe_every)
        self.probe_fraction = float(probe_fraction)

    def generator(self, epoch: int, stage: int, device: torch.device | str = "cpu") -> torch.Generator:
        """The generator stage ``stage`` uses on ``epoch`` (fresh, seeded, on ``device``)."""
        return torch.Generator(device=device).manual_seed(derive_seed(self.seed, epoch, stage))

    def draws(self, epoch: int, stage: int) -> IdDraws:
        """The per-id draws stage ``stage`` uses on ``epoch`` (equal on every rank, any sharding)."""
        return IdDraws(derive_seed(self.seed, epoch, stage))

    def _active(self, policy: Policy | None, epoch: int) -> bool:
        return policy is not None and policy.should_apply(epoch, self.num_epochs)

    def active(self, epoch: int) -> dict[str, bool]:
        """Which stages act on ``epoch`` (for logging)."""
        return {
            "noise_filter": any(self._active(f, epoch) for f in self.noise_filters),
            "prune": self._active(self.prune, epoch),
            "reweight": self._active(self.reweight, epoch),
            "augment": self._active(self.augment, epoch),
        }

    @torch.no_grad()
    def decide(
        self, source: Ledger | ShardedLedger | LedgerStats, epoch: int, labels: torch.Tensor | None = None
    ) -> Decision:
        """The decision for ``epoch`` (the epoch it will be used in).

        ``source`` is a ledger (its ``stats()`` is called, which syncs across ranks: call on
        every rank) or precomputed stats. ``labels`` (integers[N], -1 unknown; held as int32) overrides the
        labels the ledger recorded, for class-balanced reweighting. Over a sharded ledger it
        is a collective and returns the gathered decision (see :meth:`Decision.gathered`).
        """
        stats = source if isinstance(source, LedgerStats) else source.stats()
        reducer = stats.reducer
        if labels is not None:
            labels = labels[reducer.offset : reducer.offset + stats.num_samples] if reducer.distributed else labels
            stats = replaced(stats, labels=labels.to(stats.device, torch.int32))  # the others stay unread
        # the owner's decision, built in its own frame so that its temporaries (the eligible
        # mask, the prune draw) are freed before the gather allocates the gathered rows
        return self._owned_decision(stats, epoch).gathered(reducer)

    def _owned_decision(self, stats: LedgerStats, epoch: int) -> Decision:
        """The decision over the ids ``stats`` covers (a sharded ledger's owned slice). After
        each stage the statistics no later stage reads are let go (:meth:`_release_unread`)."""
        reducer, device, n = stats.reducer, stats.device, stats.num_samples
        reason = torch.full((n,), int(Reason.KEPT if stats.all_seen else Reason.UNSEEN), dtype=torch.int8, device=device)
        if not stats.all_seen:
            fill_(reason, stats.seen, int(Reason.KEPT))
        keep, score, info = self._filter(stats, epoch, reason)
        eligible = keep.clone()
        if self._active(self.reweight, epoch):
            gen = self.generator(epoch, _STAGE_REWEIGHT, device)
            weight = self.reweight.apply(stats, epoch, gen, keep=eligible).weight
            self._release_unread(stats, [self.prune, self.augment], epoch)
        else:
            weight = torch.ones(n, device=device)
        if self._active(self.prune, epoch):
            self._prune(stats, epoch, eligible, keep, reason, weight)
            self._release_unread(stats, [self.augment], epoch)
        zero_outside_(weight, keep)
        if self.probe_every and epoch % self.probe_every == 0:
            probes = self._probes(~eligible & stats.seen, epoch, reducer)
            keep |= probes  # streamed with weight 0: scored, not trained
            info["probed"] = float(reducer.count(probes))
        counts = None
        if self.reweight is not None and self.reweight.as_counts:
            counts = stochastic_round(weight, self.draws(epoch, _STAGE_COUNTS), reducer)
            weight = counts.float()
        if self._active(self.augment, epoch):
            gen = self.generator(epoch, _STAGE_AUGMENT, device)
            strength = self.augment.apply(stats, epoch, gen, keep=eligible).strength
        else:
            strength = torch.zeros(n, device=device)
        self._release_unread(stats, [], epoch)  # before the gather: none is read again here
        return Decision(keep, weight, strength, reason, score, epoch, counts, info)

    def _release_unread(self, stats: LedgerStats, later: Sequence[Policy | None], epoch: int) -> None:
        """Let go of the computed statistics that none of the ``later`` stages active on
        ``epoch`` reads (a later read would compute them again); nothing when one of those
        does not declare what it reads (:meth:`Policy.reads`)."""
        reads: set[str] = set()
        for policy in later:
            if not self._active(policy, epoch):
                continue
            declared = policy.reads()
            if declared is None:
                return
            reads |= declared
        stats.release(keep=reads)

    def _prune(
        self, stats: LedgerStats, epoch: int, eligible: torch.Tensor,
        keep: torch.Tensor, reason: torch.Tensor, weight: torch.Tensor,
    ) -> None:
        """Apply the prune policy in place: drop its picks from ``keep`` (reason ``PRUNED``) and
        rescale ``weight`` by its factor (the draw's arrays are freed on return)."""
        part = self.prune.apply(stats, epoch, self.draws(epoch, _STAGE_PRUNE), keep=eligible)
        fill_(keep, part.pruned, False)
        fill_(reason, part.pruned, int(Reason.PRUNED))
        weight.mul_(part.factor)

    def _probes(self, flagged: torch.Tensor, epoch: int, reducer: Reducer) -> torch.Tensor:
        """A uniform random subset of ``flagged``, at most ``probe_fraction`` of all samples."""
        budget = int(self.probe_fraction * reducer.total)
        if budget >= reducer.total:
            return flagged.clone()
        draw = uniform_draws(self.draws(epoch, _STAGE_PROBE), reducer, flagged.numel(), flagged.device)
        fill_(draw, ~flagged, 2.0)
        cut = reducer.kth_smallest(draw, budget) if budget > 0 else draw.new_tensor(-1.0)
        return flagged & (draw <= cut)

    def _filter(
        self, stats: LedgerStats, epoch: int, reason: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Run the active noise filters; updates ``reason`` in place, returns (keep, score,
        the filters' info)."""
        keep = torch.ones(stats.num_samples, dtype=torch.bool, device=stats.device)
        score: torch.Tensor | None = None
        info: dict[str, float] = {}
        later_stages = [self.reweight, self.prune, self.augment]
        for index, noise_filter in enumerate(self.noise_filters):
            if not self._active(noise_filter, epoch):
                continue
            gen = self.generator(epoch, _STAGE_NOISE + index, stats.device)
            part: NoisePart = noise_filter.apply(stats, epoch, gen)
            info.update(part.info or {})
            first = score is None
            if first:
                score = _writable_score(part.score, stats)
            _merge_flags(part, first, score, reason, keep)
            del part  # its flags and score (unless its score became the plan's) go before the next stage
            self._release_unread(stats, [*self.noise_filters[index + 1 :], *later_stages], epoch)
        if score is None:
            score = zero_outside_(stats.ema_loss.to(torch.float32, copy=True), stats.seen)
        return keep, score, info

    def state_dict(self) -> dict[str, Any]:
        """The plan's seed and run length (its policies are configuration, not state)."""
        return {"seed": self.seed, "num_epochs": self.num_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the seed and run length; entries missing from older checkpoints keep the
        values given to the constructor."""
        self.seed = int(state.get("seed", self.seed))
        self.num_epochs = state.get("num_epochs", self.num_epochs)
