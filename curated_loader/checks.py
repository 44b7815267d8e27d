"""Argument checks shared by the constructors, and the error they raise.

A constructor declares its ranges once (e.g. ``{"ratio": Range(0, 1, hi_open=True)}``) and
runs them when it is built, so every entry point — Python, Hydra, a user's own config —
fails at construction with a :class:`ConfigError` naming the argument and the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "OneOf", "Range", "run_checks"]


class ConfigError(ValueError):
    """An argument or configuration key is missing, unknown or out of range.

    ``key`` names it (an argument name, or a dotted config key such as
    ``curation.prune.ratio``); ``str(error)`` is ``"<key>: <problem>"``.
    """

    def __init__(self, key: str, problem: str | None = None) -> None:
        self.key = key
        self.problem = problem
        super().__init__(key if problem is None else f"{key}: {problem}")


@dataclass(frozen=True)
class Range:
    """A number in ``[lo, hi]`` (open ends with ``lo_open``/``hi_open``); ``None`` passes
    when ``optional``."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False

    def __call__(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"must be a number, got {value!r}")
        low_ok = value > self.lo if self.lo_open else value >= self.lo
        high_ok = value < self.hi if self.hi_open else value <= self.hi
        if not (low_ok and high_ok):  # NaN fails both
            raise ConfigError(name, f"must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        if self.hi == math.inf and not self.hi_open:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{self.lo}, {self.hi}{right}"


@dataclass(frozen=True)
class OneOf:
    """One of ``choices``."""

    choices: tuple[Any, ...]

    def __call__(self, name: str, value: Any) -> None:
        if value not in self.choices:
            raise ConfigError(name, f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}")


def run_checks(obj: Any, checks: Mapping[str, Any]) -> None:
    """Run ``checks`` (argument name → check) on the items of a mapping (e.g. a constructor's
    ``locals()``) or the attributes of any other ``obj``."""
    for name, check in checks.items():
        check(name, obj[name] if isinstance(obj, Mapping) else getattr(obj, name))
