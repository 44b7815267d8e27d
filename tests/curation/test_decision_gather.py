"""A decision gathered over two real gloo ranks (``Decision.gathered``) and published from the
gathered bytes (``Decision.publish_to`` → ``CurationSnapshot.publish_packed``): the full-length
tensors on every rank and the snapshot are those of the whole decision encoded as before, also
when the ranks' boundary falls inside a bitmask byte (N = 1001: ids 0-500 and 501-1000). Its
full-length columns stay undecoded through publishing, the kept-weight summary (which equals
the one computed from the decoded columns) and ``whole()``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import Decision
from curated_loader.curation.lazy import Deferred
from curated_loader.curation.sharded import owned_range, owner_reducer
from curated_loader.data.snapshot import CurationSnapshot
from tests.conftest import free_port

WORLD = 2


def whole_decision(n: int) -> Decision:
    g = torch.Generator().manual_seed(n)
    keep = torch.rand(n, generator=g) < 0.6
    weight = torch.where(keep, torch.rand(n, generator=g) * 3, torch.zeros(()))
    strength = torch.rand(n, generator=g)
    counts = weight.to(torch.int32) if n % 2 == 0 else None  # resampling delivery: weight holds the counts
    weight = weight if counts is None else counts.float()
    return Decision(keep, weight, strength, torch.zeros(n, dtype=torch.int8), torch.zeros(n), epoch=4, counts=counts)


def owned_slice(decision: Decision, lo: int, hi: int) -> Decision:
    counts = None if decision.counts is None else decision.counts[lo:hi]
    return Decision(*(getattr(decision, k)[lo:hi] for k in ("keep", "weight", "strength", "reason", "score")),
                    epoch=decision.epoch, counts=counts)


def as_snapshot_stores(decision: Decision) -> Decision:
    """``decision`` with weight and strength rounded as the compact format stores them."""
    return Decision(decision.keep, decision.weight.half().float(), torch.round(decision.strength * 255) / 255,
                    decision.reason, decision.score, epoch=decision.epoch)


def snapshot_arrays(snapshot: CurationSnapshot) -> list[torch.Tensor]:
    return [snapshot._bits.clone(), snapshot._weight.clone(), snapshot._strength.clone(), snapshot._version.clone()]


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        result = {}
        for n in (1001, 2048):
            whole = whole_decision(n)
            lo, hi = owned_range(n, rank, WORLD)
            gathered = owned_slice(whole, lo, hi).gathered(owner_reducer(n, lo))
            packed, encoded = CurationSnapshot(n), CurationSnapshot(n)
            gathered.publish_to(packed)  # from the gathered bytes
            kept = gathered.kept_summary()
            lazy = [isinstance(gathered.__dict__[k], Deferred) for k in ("keep", "weight", "strength", "counts")]
            entire = gathered.whole(owner_reducer(n, lo))  # reason and score over all ids (a collective)
            whole_lazy = [isinstance(entire.__dict__[k], Deferred) for k in ("keep", "weight", "strength")]
            encoded.publish(whole.keep, whole.weight, whole.strength, version=whole.epoch)  # as before
            again = CurationSnapshot(n)
            gathered.publish_to(again)  # the bytes are let go after the first publish: encoded now
            result[n] = {"kept": kept, "lazy": lazy, "whole_lazy": whole_lazy, "whole_keep": entire.keep,
                         "whole_reason": entire.reason, "decision": gathered, "num_samples": gathered.num_samples,
                         "gathered": gathered.state_dict(), "packed": snapshot_arrays(packed),
                         "encoded": snapshot_arrays(encoded), "again": snapshot_arrays(again)}
        bad = whole_decision(1001)
        bad.weight[700] = -2.0  # rank 1's slice
        lo, hi = owned_range(1001, rank, WORLD)
        gathered = owned_slice(bad, lo, hi).gathered(owner_reducer(1001, lo))
        try:
            gathered.publish_to(CurationSnapshot(1001))
            result["bad"] = None
        except ValueError as error:
            result["bad"] = str(error)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_gathered_decision_publishes_its_bytes_as_the_encoded_decision(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for n in (1001, 2048):
            whole, got = whole_decision(n), result[n]["gathered"]
            assert torch.equal(got["keep"], whole.keep)
            assert torch.equal(got["weight"], whole.weight.half().float())
            assert torch.equal(got["strength"], torch.round(whole.strength * 255) / 255)
            if whole.counts is None:
                assert got["counts"] is None and result[n]["lazy"] == [True, True, True, False]
            else:
                assert torch.equal(got["counts"], whole.counts) and result[n]["lazy"] == [True] * 4
            assert result[n]["num_samples"] == n
            assert result[n]["whole_lazy"] == [True] * 3  # whole() gathers reason and score, decodes nothing
            assert torch.equal(result[n]["whole_keep"], whole.keep) and torch.equal(result[n]["whole_reason"], whole.reason)
            assert result[n]["kept"] == pytest.approx(as_snapshot_stores(whole).kept_summary(), rel=1e-6)
            pickled = result[n]["decision"]  # pickled with its columns decoded
            assert torch.equal(pickled.weight, got["weight"]) and torch.equal(pickled.keep, whole.keep)
            for copied, encoded, again in zip(result[n]["packed"], result[n]["encoded"], result[n]["again"]):
                assert torch.equal(copied, encoded) and torch.equal(again, encoded)
            assert int(result[n]["packed"][3]) == 4  # the version
        assert "finite and non-negative, got -2.0 for sample 700" in result["bad"]
