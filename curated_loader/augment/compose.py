"""Composition of augmentations, user callables, and the batched convenience entry point."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .base import Augmentation, SeededAugment, as_strength, keep_where_zero
from .seeding import Draws, IntLike, fold_in, sample_seed

__all__ = ["Compose", "FromCallable", "augment_batch"]

SampleFn = Callable[[dict[str, Any], float], dict[str, Any]]
log = logging.getLogger("curated_loader")
# Compose -> its torch.compile'd batched form (kept outside the object: not pickled, not in repr)
_COMPILED: weakref.WeakKeyDictionary[Compose, Callable[..., torch.Tensor]] = weakref.WeakKeyDictionary()


class FromCallable(SeededAugment):
    """Wrap any picklable ``fn(sample, strength) -> sample`` (a module-level function or an
    object with ``__call__``). Per-sample only, unless ``fn`` has its own
    ``batch(x, strength, seeds)``. ``fn`` handles its own randomness; it is never called with
    strength 0 through this wrapper."""

    def __init__(self, fn: SampleFn) -> None:
        if not callable(fn):
            raise TypeError(f"expected a callable, got {type(fn).__name__}")
        self.fn = fn

    @property
    def field(self) -> str | None:
        """The wrapped callable's ``field``, if it declares one."""
        return getattr(self.fn, "field", None)

    def apply_seeded(self, sample: dict[str, Any], strength: float, seeds: torch.Tensor) -> dict[str, Any]:
        return sample if strength <= 0.0 else self.fn(sample, strength)

    def batch(self, x: torch.Tensor, strength: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.fn, "batch"):
            raise TypeError(f"{self.fn!r} has no batch(x, strength, seeds); use it per sample")
        strength = as_strength(strength, x)
        return keep_where_zero(self.fn.batch(x, strength, seeds), x, strength)


def _as_member(aug: Any) -> SeededAugment:
    return aug if isinstance(aug, SeededAugment) else FromCallable(aug)


class Compose(SeededAugment):
    """Apply augmentations in order with one strength. The parameters of every member are
    drawn in one ``[B, total]`` block (member ``i``'s columns are hashed with ``i``, so
    members' parameters are independent); a wrapped callable gets child keys
    ``fold_in(seeds, i)``. Plain
    callables are wrapped in :class:`FromCallable`. The batched form needs every member to have
    ``batch`` and applies all of them to the one tensor it is given.

    ``compile=True`` runs the batched form through ``torch.compile`` (fused kernels; needs a
    C++ compiler on a CPU). The first batch compiles (tens of seconds on a CPU); the batch
    dimension is dynamic, so other batch sizes, strengths, seeds and epochs reuse that graph
    (a batch of one runs eager; a new sample shape, dtype or device compiles once more). Off by
    default. Integer-hashed draws stay exact; values computed in float (normals,
    interpolation) may differ from the eager ones by a few float32 ulps. If compiling or
    running the compiled form fails, the eager form is used from then on, with one warning."""

    def __init__(self, augs: Sequence[Any], compile: bool = False) -> None:
        self.augs = [_as_member(a) for a in augs]
        self.compile = bool(compile)

    @property
    def field(self) -> str | None:
        """The sample key every member augments, or None when members differ."""
        fields = {getattr(a, "field", None) for a in self.augs}
        return fields.pop() if len(fields) == 1 else None

    def apply_seeded(self, sample: dict[str, Any], strength: float, seeds: torch.Tensor) -> dict[str, Any]:
        if strength <= 0.0:
            return sample
        shape = getattr(sample.get(self.field), "shape", None) if self.field is not None else None
        for i, (aug, draws) in enumerate(zip(self.augs, self._draws(seeds, None if shape is None else torch.Size((1, *shape))))):
            if draws is None:
                sample = aug.apply_seeded(sample, strength, fold_in(seeds, i))
            else:
                sample = aug.apply_drawn(sample, strength, draws)  # type: ignore[attr-defined]
        return sample

    def batch(self, x: torch.Tensor, strength: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=x.device)
        seeds = seeds if seeds.dim() == 1 else seeds.reshape(-1)
        strength = as_strength(strength, x)
        if self.compile and x.device.type != "meta" and x.shape[0] >= 2:
            try:
                compiled = _COMPILED.get(self)
                if compiled is None:
                    compiled = _COMPILED[self] = torch.compile(Compose._batch)  # unbound: no reference to self
                return compiled(self, *_batch_dim_dynamic(x, strength, seeds))
            except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager
                log.warning("Compose(compile=True): torch.compile failed (%s: %s); using the eager form",
                            type(error).__name__, error)
                self.compile = False
        return self._batch(x, strength, seeds)

    def _batch(self, x: torch.Tensor, strength: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """The batched form for int64 ``[B]`` keys and a ready strength."""
        out = x
        for i, (aug, draws) in enumerate(zip(self.augs, self._draws(seeds, x.shape))):
            if draws is None:
                out = aug.batch(out, strength, fold_in(seeds, i))
            else:
                out = aug.transform(out, strength, draws)  # type: ignore[attr-defined]
        return keep_where_zero(out, x, strength)  # strength 0: the input, bit for bit

    def _draws(self, seeds: torch.Tensor, shape: torch.Size | None = None) -> list[Draws | None]:
        """Per member: its draws, all mixed in one pass (with the element draws members declare
        for a batch of ``shape``, when given), or None for wrapped callables."""
        members = [
            (i, a.num_draws, {} if shape is None else a.element_words(shape))
            for i, a in enumerate(self.augs) if isinstance(a, Augmentation)
        ]
        drawn = iter(Draws.for_members(seeds, members))
        return [next(drawn) if isinstance(aug, Augmentation) else None for aug in self.augs]


def _batch_dim_dynamic(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Views of ``tensors`` (contiguous: a broadcast strength has other strides than a
    per-sample one) with dim 0 marked dynamic, so that one compiled graph serves every batch
    size from 2 up; the caller's tensors are left unmarked."""
    views = tuple(t.contiguous().view(t.shape) for t in tensors)
    for view in views:
        torch._dynamo.mark_dynamic(view, 0)
    return views


def augment_batch(
    aug: SeededAugment,
    x: torch.Tensor,
    strength: float | torch.Tensor,
    ids: torch.Tensor,
    epoch: IntLike,
    seed: IntLike,
    repeat: IntLike | None = None,
) -> torch.Tensor:
    """Compute per-sample keys from ``(seed, epoch, ids, repeat)`` and call ``aug.batch``.
    ``repeat`` is a host integer or a per-sample tensor like ``ids`` (copies of one id with
    different repeats are augmented differently, as in the loader workers)."""
    ids = torch.as_tensor(ids, dtype=torch.int64, device=x.device)
    seeds = sample_seed(seed, epoch, ids, 0 if repeat is None else repeat)
    return aug.batch(x, strength, seeds)  # every batch() clamps the strength itself
