"""The tar reader under mutated headers: a good read or a ShardError, never a hang or crash."""

import pytest

from tests.data.tarfuzz import fuzz


@pytest.mark.timeout(300)
def test_mutated_headers_end_in_a_read_or_a_shard_error():
    outcomes = fuzz(seed=0, n=2000)
    assert outcomes["ok"] + outcomes["error"] == 2000
    assert outcomes["error"] > 200 and outcomes["ok"] > 200  # the mutations reach both outcomes
