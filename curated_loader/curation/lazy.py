"""Dataclass fields computed when first read: a :class:`Deferred` value in a :class:`LazyField`.

The ledger's statistics (:class:`~curated_loader.curation.ledger.LedgerStats`) and a gathered
decision's full-length columns (:class:`~curated_loader.curation.decision.Decision`) use them,
so work and memory are spent only on what is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch

_REQUIRED = object()


class Deferred:
    """A value computed by ``compute()`` when first asked for (then kept); ``length``, when
    given, is the length of the tensor it will be, readable without computing it.

    ``recomputable``: ``compute`` gives the same value whenever it is called, so the value may
    be let go (:meth:`release`) and computed again when next asked for, until :meth:`freeze`
    keeps it for good; releasing also releases ``depends`` (the values it is computed from).
    Otherwise ``compute`` is dropped once it has run."""

    __slots__ = ("__weakref__", "_compute", "_value", "depends", "length", "recomputable")

    def __init__(
        self, compute: Callable[[], torch.Tensor], length: int | None = None, *,
        recomputable: bool = False, depends: tuple[Deferred, ...] = (),
    ) -> None:
        self._compute: Callable[[], torch.Tensor] | None = compute
        self._value: torch.Tensor | None = None
        self.length = length
        self.recomputable = recomputable
        self.depends = depends

    @property
    def computed(self) -> bool:
        """Whether the value is held now."""
        return self._value is not None

    @property
    def final(self) -> bool:
        """Whether the value, once computed, is kept for good (nothing to compute it again)."""
        return self._compute is None or not self.recomputable

    def value(self) -> torch.Tensor:
        if self._value is None:
            assert self._compute is not None
            self._value = self._compute()
            if not self.recomputable:
                self._compute = None
        return self._value

    def freeze(self) -> None:
        """Compute the value if it is not held and keep it for good (what it is computed from
        is about to change)."""
        self.value()
        self._compute = None
        self.depends = ()

    def release(self) -> None:
        """Let the value go if it can be computed again (a later :meth:`value` does), and
        release what it is computed from."""
        if self._compute is not None and self.recomputable:
            self._value = None
            for source in self.depends:
                source.release()


class LazyField:
    """Data descriptor for a frozen dataclass field that may be given a :class:`Deferred`:
    reads return the computed value (computed once, or again after a recomputable one was
    released). Without ``default`` the field stays required (class-level reads raise
    ``AttributeError``, which dataclasses take as "no default")."""

    def __init__(self, default: Any = _REQUIRED) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            if self.default is _REQUIRED:
                raise AttributeError(self.name)
            return self.default
        value = obj.__dict__[self.name]
        if isinstance(value, Deferred):
            deferred, value = value, value.value()
            if deferred.final:  # kept for good: hold the value itself
                obj.__dict__[self.name] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


def resolved_state(obj: Any, names: list[str]) -> dict[str, Any]:
    """``obj.__dict__`` with the lazy fields ``names`` computed (for pickling)."""
    return {**obj.__dict__, **{name: getattr(obj, name) for name in names}}


def replaced(obj: Any, **changes: Any) -> Any:
    """A copy of the frozen dataclass ``obj`` with the fields ``changes`` set, sharing the lazy
    fields it does not change as they are: those still unread stay unread (one computation
    serves both objects). ``dataclasses.replace`` would read, so compute, every one of them.
    Private entries (names starting with ``_``, e.g. memos) are not copied."""
    unknown = sorted(set(changes) - {f.name for f in fields(obj)})
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {', '.join(unknown)}")
    copy = object.__new__(type(obj))
    copy.__dict__.update({k: v for k, v in obj.__dict__.items() if not k.startswith("_")}, **changes)
    return copy
