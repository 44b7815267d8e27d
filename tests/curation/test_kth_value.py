"""The dense plan's quantile selection (``reducer.kth_value``): a band bracketed by a strided
sample, then ``torch.kthvalue`` on the band. It must return the bits ``torch.kthvalue`` returns
on all values, for any k and any arrangement of the values, including ones where the sample
misleads it (it then falls back to the full selection)."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from curated_loader.curation import reducer as reducer_module
from curated_loader.curation.ledger import LedgerStats
from curated_loader.curation.reducer import kth_value

N = 3 * reducer_module._BAND_MIN + 7  # above the size where the band path starts


def _arrangements() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    uniform = torch.rand(N, generator=g)
    lossy = torch.distributions.Exponential(torch.tensor(0.7)).sample((N,))
    periodic = (torch.arange(N) % (N // reducer_module._BAND_SAMPLE)).float()  # the stride sees one value only
    return {
        "uniform": uniform,
        "sorted": uniform.sort().values,
        "descending": uniform.sort(descending=True).values,
        "loss-like": lossy,
        "few ties": (uniform * 7).floor(),
        "constant": torch.full((N,), 0.25),
        "periodic": periodic,
        "signed zeros and infinities": torch.cat([torch.randn(N - 4, generator=g),
                                                  torch.tensor([-0.0, 0.0, float("inf"), -float("inf")])]),
    }


@pytest.mark.parametrize("name", list(_arrangements()))
def test_kth_value_returns_the_bits_of_torch_kthvalue(name):
    values = _arrangements()[name]
    for k in (1, 2, 100, N // 3, N // 2, N // 2 + 1, int(0.8 * N), N - 1, N):
        expected = torch.kthvalue(values, k).values
        got = kth_value(values, k)
        assert got.view(torch.int32) == expected.view(torch.int32), (name, k, float(got), float(expected))


def test_dense_quantile_uses_it_and_agrees_with_a_sort():
    values = _arrangements()["loss-like"]
    seen = torch.ones(N, dtype=torch.bool)
    seen[::5] = False
    unread = {f.name: torch.zeros(N) for f in fields(LedgerStats)[5:]}  # per-sample statistics the test does not read
    stats = LedgerStats(epoch=0, num_seen=int(seen.sum()), num_with_logits=0, seen=seen,
                        has_logits=torch.zeros(N, dtype=torch.bool), **unread)
    ordered = values[seen].sort().values
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        rank = min(ordered.numel(), max(1, round(q * (ordered.numel() - 1)) + 1))
        assert float(stats.quantile(values, q)) == float(ordered[rank - 1])
