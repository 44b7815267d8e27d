"""The keyed permutation indexed mode shuffles with: a bijection for every size, evaluated at
any positions alone, the same on every process for the same keys."""

from __future__ import annotations

import numpy as np
import pytest

from curated_loader.data.permutation import KeyedPermutation


def keyed(n: int, seed: int = 0) -> KeyedPermutation:
    return KeyedPermutation.seeded(n, np.random.default_rng(seed))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 15, 16, 17, 1000, 4097, 65536, 65537, 1_000_003])
def test_it_is_a_bijection_of_every_size(n):
    assert np.array_equal(np.sort(keyed(n)(np.arange(n))), np.arange(n))


def test_any_positions_alone_give_what_the_whole_permutation_gives():
    n = 100_003
    whole = keyed(n, 4)(np.arange(n))
    positions = np.array([5, 0, n - 1, 77, 77, 4096])
    assert np.array_equal(keyed(n, 4)(positions), whole[positions])
    assert np.array_equal(keyed(n, 4)(np.arange(3, n, 8)), whole[3::8])


def test_keys_choose_the_permutation_and_it_shuffles():
    n = 10_000
    a, b = keyed(n, 1)(np.arange(n)), keyed(n, 2)(np.arange(n))
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(np.arange(n), a)[0, 1]) < 0.05  # no trace of the input order
    firsts = [keyed(10, seed)(np.array([0]))[0] for seed in range(4000)]  # where position 0 goes
    assert np.bincount(firsts, minlength=10).min() > 300  # each of 10 places about 400 times


def test_positions_outside_the_range_are_refused():
    with pytest.raises(IndexError, match=r"positions must lie in \[0, 10\)"):
        keyed(10)(np.array([3, 10]))
