"""A keyed pseudo-random permutation of ``[0, n)`` evaluated at any positions, without
listing ``[0, n)``: a Feistel network over the smallest power of two at or above ``n`` (its
bits split into a high and a low part, each round XORs a keyed splitmix64 of one part into
the other), walked until it lands inside ``[0, n)`` (fewer than 2 steps per position on
average)."""

from __future__ import annotations

import numpy as np

#: Rounds of the Feistel network (each XORs a keyed splitmix64 of one part into the other).
ROUNDS = 6
#: Positions permuted at a time (their temporaries stay in the cache).
_BLOCK = 1 << 15
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix_(x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer of ``x``, in place (uint64, wrapping; ``scratch`` as large)."""
    for shift, multiplier in ((30, _MIX1), (27, _MIX2), (31, None)):
        x ^= np.right_shift(x, np.uint64(shift), out=scratch)
        if multiplier is not None:
            x *= multiplier
    return x


class KeyedPermutation:
    """A bijection of ``[0, n)`` chosen by ``keys`` (uint64, one per round; :data:`ROUNDS`
    of them from :meth:`seeded`): ``perm(positions)`` gives the index each position maps to,
    in time and memory proportional to the positions asked for. Equal ``n`` and keys give
    equal permutations on every process."""

    def __init__(self, n: int, keys: np.ndarray) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = int(n)
        bits = max(2, (self.n - 1).bit_length())  # 2**bits >= n
        self.low_bits = bits // 2  # the high part has the rest
        self.high_mask = np.uint64((1 << (bits - self.low_bits)) - 1)
        keys = np.array(keys, dtype=np.uint64)
        self.keys = _mix_(keys, np.empty_like(keys))  # one round key each

    @classmethod
    def seeded(cls, n: int, rng: np.random.Generator) -> KeyedPermutation:
        """The permutation of ``[0, n)`` whose keys ``rng`` draws."""
        return cls(n, rng.integers(0, 2**63, size=ROUNDS, dtype=np.uint64))

    def _round_trip(self, x: np.ndarray, value: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """The Feistel network on ``x`` (uint64, in place; ``value`` and ``scratch`` as large)."""
        shift, low_mask = np.uint64(self.low_bits), np.uint64((1 << self.low_bits) - 1)
        high, low = x >> shift, x & low_mask
        for i, key in enumerate(self.keys):  # each round is undone by XORing the same value again
            source, target, mask = (high, low, low_mask) if i % 2 else (low, high, self.high_mask)
            _mix_(np.add(source, key, out=value), scratch)
            target ^= np.bitwise_and(value, mask, out=value)
        return np.bitwise_or(np.left_shift(high, shift, out=x), low, out=x)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        x = np.asarray(positions, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.n):
            raise IndexError(f"positions must lie in [0, {self.n})")
        out = x.astype(np.uint64)
        value, scratch = np.empty(_BLOCK, dtype=np.uint64), np.empty(_BLOCK, dtype=np.uint64)
        n = np.uint64(self.n)
        for start in range(0, len(out), _BLOCK):  # blocks whose temporaries stay in the cache
            block = out[start : start + _BLOCK]
            self._round_trip(block, value[: block.size], scratch[: block.size])
            outside = np.flatnonzero(block >= n)
            while outside.size:  # cycle-walking: a bijection of the larger domain, restricted to [0, n)
                walked = self._round_trip(block[outside], value[: outside.size], scratch[: outside.size])
                block[outside] = walked
                outside = outside[walked >= n]
        return out.astype(np.int64)
