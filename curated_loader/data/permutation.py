"""A keyed pseudo-random permutation of ``[0, n)`` evaluated at any positions, without
listing ``[0, n)``: a balanced Feistel network over the smallest even power of two at or
above ``n`` with a splitmix64 round function, walked until it lands inside ``[0, n)``."""

from __future__ import annotations

import numpy as np

#: Rounds of the Feistel network (each a keyed splitmix64 of one half).
ROUNDS = 6
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, element-wise (uint64, wrapping)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


class KeyedPermutation:
    """A bijection of ``[0, n)`` chosen by ``keys`` (uint64, one per round; :data:`ROUNDS`
    of them from :meth:`seeded`): ``perm(positions)`` gives the index each position maps to,
    in time and memory proportional to the positions asked for. Equal ``n`` and keys give
    equal permutations on every process."""

    def __init__(self, n: int, keys: np.ndarray) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = int(n)
        self.half = max(1, (max(self.n - 1, 1).bit_length() + 1) // 2)  # 2**(2*half) >= n
        self.keys = _mix(np.asarray(keys, dtype=np.uint64))  # one round key each

    @classmethod
    def seeded(cls, n: int, rng: np.random.Generator) -> KeyedPermutation:
        """The permutation of ``[0, n)`` whose keys ``rng`` draws."""
        return cls(n, rng.integers(0, 2**63, size=ROUNDS, dtype=np.uint64))

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        h, mask = np.uint64(self.half), np.uint64((1 << self.half) - 1)
        left, right = x >> h, x & mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right + key) & mask)
        return (left << h) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        x = np.asarray(positions, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.n):
            raise IndexError(f"positions must lie in [0, {self.n})")
        out = self._round_trip(x.astype(np.uint64))
        outside = np.flatnonzero(out >= np.uint64(self.n))
        while outside.size:  # cycle-walking: a bijection of the larger domain, restricted to [0, n)
            out[outside] = self._round_trip(out[outside])
            outside = outside[out[outside] >= np.uint64(self.n)]
        return out.astype(np.int64)
