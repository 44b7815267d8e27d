"""Plans over a sharded ledger: two real gloo ranks record the same random stream into a dense
Ledger (summed across ranks) and a ShardedLedger; ``plan.decide`` over each gives the same
decision on every rank (keep and reasons exactly, weights to float16 rounding, strengths to
the snapshot's uint8 code), with one ``all_gather`` for the whole decision. Quantiles over the
ranks are exact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import (
    AugmentStrength,
    AUMFilter,
    CurationPlan,
    GMMFilter,
    InfoBatchPrune,
    Ledger,
    LossMarginFilter,
    Reweight,
    ShardedLedger,
    SmallLossFilter,
)
from curated_loader.curation import decision as decision_module
from curated_loader.curation import draws, masking
from curated_loader.curation.sharded import owned_range
from tests.conftest import free_port

N, SEEN, CLASSES, EPOCHS, BATCH, WORLD = 1001, 980, 5, 3, 49, 2  # ids >= SEEN are never recorded


def plans() -> dict[str, CurationPlan]:
    """Every policy kind, all active on the decided epoch."""
    return {
        "default": CurationPlan(
            noise_filter=[LossMarginFilter(warmup_epochs=0), GMMFilter(warmup_epochs=0), SmallLossFilter(quantile=0.05, warmup_epochs=0)],
            prune=InfoBatchPrune(ratio=0.5, warmup_epochs=0),
            reweight=Reweight(class_balance=True, warmup_epochs=0),
            augment=AugmentStrength(warmup_epochs=0),
            seed=3, num_epochs=10, probe_every=1, probe_fraction=0.02,
        ),
        "counts": CurationPlan(
            noise_filter=AUMFilter(quantile=0.1, warmup_epochs=0),
            reweight=Reweight(alpha=1.0, as_counts=True, warmup_epochs=0),
            augment=AugmentStrength(mapping="hard_strong", warmup_epochs=0),
            seed=5,
        ),
    }


def rank_calls(rank: int, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    """This rank's record calls of one epoch: its half of a permutation of the seen ids (each
    id once per epoch, as the loader delivers); every 4th id carries a wrong label, so the
    loss is bimodal."""
    g = torch.Generator().manual_seed(100 + epoch)
    ids = torch.randperm(SEEN, generator=g).chunk(WORLD)[rank]
    g = torch.Generator().manual_seed(10 * epoch + rank)
    out = []
    for batch in ids.split(BATCH):
        targets = batch % CLASSES
        truth = torch.where(batch % 4 == 0, (targets + 1) % CLASSES, targets)
        logits = torch.randn(len(batch), CLASSES, generator=g)
        logits[torch.arange(len(batch)), truth] += 2.0 + epoch
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        out.append((batch, loss, logits, targets))
    return out


def _worker(rank: int, port: int, out: str) -> None:
    # small steps, so the decision is packed and unpacked, the draws hashed, and the policies'
    # and quantiles' element-wise work done in several steps with a short last one (501 and
    # 500 owned ids)
    decision_module.GATHER_CHUNK, draws.DRAW_CHUNK, masking.MASK_BLOCK = 48, 100, 64
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        dense, sharded = Ledger(N, CLASSES), ShardedLedger(N, CLASSES)
        for epoch in range(EPOCHS):
            for ledger in (dense, sharded):
                ledger.set_epoch(epoch)
            for call in rank_calls(rank, epoch):
                dense.record(*call)
                sharded.record(*call)
            dense.sync()
            sharded.sync()
        result: dict = {"quantiles": _quantiles(rank)}
        gathers: list[tuple[str, int]] = []
        real_gathers = {name: getattr(dist, name) for name in ("all_gather", "all_gather_single", "broadcast")}

        def counting(name):
            def gather(*args, **kwargs):
                moved = args[0] if name == "broadcast" else args[1]  # the rows one rank sends
                gathers.append((name, moved.numel()))
                return real_gathers[name](*args, **kwargs)
            return gather

        for name, plan in plans().items():
            expected = plan.decide(dense.stats(), EPOCHS)
            owned = sharded.stats()  # its sync's exchange is not part of the decision
            for gather_name in real_gathers:
                setattr(dist, gather_name, counting(gather_name))
            try:
                got = plan.decide(owned, EPOCHS)
            finally:
                for gather_name, real in real_gathers.items():
                    setattr(dist, gather_name, real)
            whole = got.whole(sharded.reducer)
            result[name] = {"dense": expected.state_dict(), "sharded": got.state_dict(),
                            "dense_summary": expected.summary(), "sharded_summary": got.summary(),
                            "whole_reason": whole.reason, "whole_score": whole.score}
        result["gathered_bytes"] = gathers
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _quantiles(rank: int) -> dict[str, list[float]]:
    """k-th values over both ranks' slices (ties, negatives, -0.0 and an empty mask part)
    beside torch.kthvalue of the whole array."""
    from curated_loader.curation.reducer import GroupReducer

    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(500, generator=g) * 3, torch.randint(-3, 4, (300,), generator=g).float(),
                        torch.tensor([-0.0, 0.0, float("inf"), -float("inf")])])
    lo, hi = owned_range(values.numel(), rank, WORLD)
    mask = torch.arange(values.numel()) % 3 != 0
    reducer = GroupReducer(values.numel(), lo, [owned_range(values.numel(), r, WORLD) for r in range(WORLD)])
    ks = [1, 2, 17, 250, 300, 401, 533, int(mask.sum())]
    got = [float(reducer.kth_smallest(values[lo:hi], k, mask[lo:hi])) for k in ks]
    expected = [float(torch.kthvalue(values[mask], k).values) for k in ks]
    return {"got": got, "expected": expected}


@pytest.mark.timeout(300)
def test_sharded_plan_decides_as_the_dense_plan(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for result in results:
        assert result["quantiles"]["got"] == result["quantiles"]["expected"]
        for name in plans():
            dense, sharded = result[name]["dense"], result[name]["sharded"]
            assert torch.equal(sharded["keep"], dense["keep"]), name
            assert torch.equal(sharded["weight"], sharded["weight"].half().float()), name  # gathered as float16
            assert torch.allclose(sharded["weight"], dense["weight"], rtol=2**-10, atol=0), name  # its rounding
            assert torch.equal(torch.round(sharded["strength"] * 255), torch.round(dense["strength"] * 255)), name
            assert result[name]["sharded_summary"] == result[name]["dense_summary"], name
            assert sharded["info"] == pytest.approx(dense["info"]), name
            if dense["counts"] is not None:
                assert torch.equal(sharded["counts"], dense["counts"]), name
            lo, hi = sharded["offset"], sharded["offset"] + sharded["reason"].numel()
            assert torch.equal(sharded["reason"], dense["reason"][lo:hi]), name
            assert torch.allclose(sharded["score"], dense["score"][lo:hi], rtol=1e-5, atol=1e-6), name
            # what checkpoints and reports get: every id's reason and score, on every rank
            assert torch.equal(result[name]["whole_reason"], dense["reason"]), name
            assert torch.allclose(result[name]["whole_score"], dense["score"], rtol=1e-5, atol=1e-6), name
        # per decision, each rank's row of 3.125 bytes per (padded) sample broadcast in place (on
        # the CPU: gloo's all-gather would stage the whole output in a temporary)
        padded = 16 * -(-owned_range(N, 0, WORLD)[1] // 16)
        assert result["gathered_bytes"] == [("broadcast", padded * 25 // 8)] * WORLD * len(plans())
    # the ranks agree, own different slices, and the stream exercised every stage
    assert all(torch.equal(results[0][n]["sharded"]["keep"], results[1][n]["sharded"]["keep"]) for n in plans())
    assert [r["default"]["sharded"]["offset"] for r in results] == [owned_range(N, r, WORLD)[0] for r in range(WORLD)]
    summary = results[0]["default"]["dense_summary"]
    assert summary["flagged"] > 0 and summary["pruned"] > 0 and summary["unseen"] == N - SEEN
    assert results[0]["default"]["dense"]["info"]["probed"] > 0
    counts = results[0]["counts"]["dense"]["counts"]
    assert counts.max() >= 2 and results[0]["counts"]["dense_summary"]["flagged_aum"] > 0
