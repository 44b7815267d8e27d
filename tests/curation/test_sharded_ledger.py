"""The sharded ledger: real gloo ranks (two, and three) record overlapping random batches
(duplicates included); the union of the owners' slices equals a dense single-process Ledger fed the same
records in the documented order, with one all_gather and one all_to_all_single per exchange round per
epoch — also when rounds are tiny (many rounds) and buffer blocks smaller than one call, and with
the exchange's compact rows (local id and kind in one word) or the buffered rows as they are."""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curated_loader.curation import Ledger, ShardedLedger, make_ledger
from curated_loader.curation import sharded
from curated_loader.curation.sharded import (
    AUTO_SHARD_MIN_SAMPLES,
    _id_runs,
    _round_bounds,
    _Scratch,
    _sorted_ids,
    owned_range,
)
from tests.conftest import free_port

N, CLASSES, EPOCHS, CALLS, BATCH = 101, 4, 3, 4, 24
SMALL = {"exchange_round": 7, "exchange_buckets": 16, "buffer_block": 10}  # many rounds; calls span blocks


def calls(rank: int, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    """One rank's record calls of one epoch: random ids over all of [0, N) (so both ranks
    overlap and batches repeat ids); the last two calls have no logits, the very last no
    targets either."""
    g = torch.Generator().manual_seed(1000 * epoch + rank)
    out = []
    for i in range(CALLS):
        ids = torch.randint(N, (BATCH,), generator=g)
        loss = torch.rand(BATCH, generator=g) * 3
        logits = torch.randn(BATCH, CLASSES, generator=g)
        targets = ids % CLASSES
        out.append([(ids, loss), (ids, loss, None, targets)][i - CALLS + 2] if i >= CALLS - 2 else (ids, loss, logits, targets))
    return out


def kind(call: tuple) -> int:
    """0: logits, 1: no logits but targets, 2: loss only (the order owners fold them in)."""
    return 2 if len(call) == 2 else int(call[2] is None)


def restrict(call: tuple, lo: int, hi: int) -> tuple:
    """The entries of ``call`` whose id lies in ``[lo, hi)``."""
    inside = (call[0] >= lo) & (call[0] < hi)
    return tuple(None if t is None else t[inside] for t in call)


def dense_reference(world: int, stream: Callable[[int, int], list[tuple]] | None = None) -> Ledger:
    """A single-process Ledger fed in the sharded ledger's order: per epoch and owner, the
    owner's calls restricted to its ids, then each other rank's entries (by kind) as one call.
    ``stream(rank, epoch)`` gives the calls (default :func:`calls`)."""
    stream = stream or calls
    dense = Ledger(N, CLASSES)
    for epoch in range(EPOCHS):
        dense.set_epoch(epoch)
        for owner in range(world):
            lo, hi = owned_range(N, owner, world)
            for call in stream(owner, epoch):
                dense.record(*restrict(call, lo, hi))
            for sender in (r for r in range(world) if r != owner):
                parts = [restrict(c, lo, hi) for c in stream(sender, epoch)]
                for k in range(3):
                    group = [p for p in parts if kind(p) == k]
                    if group:
                        dense.record(*(None if column[0] is None else torch.cat(column) for column in zip(*group)))
    return dense


def _worker(rank: int, world: int, port: int, out: str, limits: dict, compact: bool = True) -> None:
    if not compact:  # owner ranges above the compact rows' limit exchange the buffered rows as they are
        sharded._COMPACT_MAX_IDS = 0
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    counted: list[str] = []
    real = {name: getattr(dist, name) for name in ("all_to_all_single", "all_reduce", "all_gather", "broadcast")}

    def counting(name):
        def call(*args, **kwargs):
            counted.append(name)
            return real[name](*args, **kwargs)

        return call

    try:
        for name in real:
            setattr(dist, name, counting(name))
        ledger = ShardedLedger(N, CLASSES, fold_chunk=5, **limits)  # several fold steps, some ids above 5 entries
        assert ledger._compact == compact
        per_epoch, rounds = [], []
        for epoch in range(EPOCHS):
            ledger.set_epoch(epoch)
            for call in calls(rank, epoch):
                ledger.record(*call)
            before = len(counted)
            ledger.sync()
            per_epoch.append(counted[before:])
            rounds.append(ledger.last_exchange_rounds)
        stats = ledger.stats()
        tables = {name: ledger.table(name).clone() for name in ledger.table_names}
        torch.save({"tables": tables, "stats": stats, "collectives": per_epoch, "rounds": rounds}, Path(out) / f"rank{rank}.pt")
    finally:
        for name, fn in real.items():
            setattr(dist, name, fn)
        dist.destroy_process_group()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("world", "limits", "compact"), [(2, {}, True), (3, SMALL, True), (3, SMALL, False)])  # 3: uneven ranges, two senders per owner
def test_owner_slices_of_gloo_ranks_equal_the_dense_ledger(tmp_path, world, limits, compact):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(world, free_port(), str(tmp_path), limits, compact), nprocs=world, join=True)
    dense = dense_reference(world)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for name in dense.table_names:
        union = torch.cat([g["tables"][name] for g in got])
        expected = dense.table(name)
        assert union.shape == expected.shape, name
        assert torch.allclose(union.double(), expected.double(), rtol=1e-5, atol=1e-5), name
    dense_stats = dense.stats()
    assert [g["stats"].num_seen for g in got] == [dense_stats.num_seen] * world  # counts over all ranks
    for r, g in enumerate(got):
        lo, hi = owned_range(N, r, world)
        assert (g["stats"].offset, g["stats"].total_samples, g["stats"].num_samples) == (lo, N, hi - lo)
        assert torch.allclose(g["stats"].mean_loss, dense_stats.mean_loss[lo:hi], rtol=1e-5, atol=1e-6)
        for collectives, rounds in zip(g["collectives"], g["rounds"]):
            assert collectives == ["all_gather"] + ["all_to_all_single"] * rounds, collectives
        assert g["rounds"] == got[0]["rounds"]
        # every entry another rank sent was received: default limits take one round, tiny ones many
        assert all(r == 1 for r in g["rounds"]) if not limits else min(g["rounds"]) >= 4, g["rounds"]
    # the stream did exercise what the equality is about
    assert int(dense.table("count").sum()) == world * EPOCHS * CALLS * BATCH
    assert int(dense.table("forget_count").sum()) > 0
    assert int((dense.table("count") > world * EPOCHS).sum()) > 0  # duplicates


def mixed_calls(rank: int, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    """Epochs 0 and 2: rank r records its half of a shuffled [0, N) once (two calls with logits,
    one with targets only), so no id repeats within a sender's exchanged entries. Epoch 1:
    repeats within calls, across calls and across ranks, and one id recorded 8 times
    (more than a fold step of 5 entries) of the other rank's range."""
    g = torch.Generator().manual_seed(2000 * epoch + rank)
    if epoch == 1:
        out = list(calls(rank, epoch))
        ids = torch.full((8,), N - 2 if rank == 0 else 7)  # owned by the other rank
        return [*out, (ids, torch.rand(8, generator=g), torch.randn(8, CLASSES, generator=g), ids % CLASSES)]
    share = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))[rank::2]
    out = []
    for i, ids in enumerate(share.tensor_split(3)):
        loss, logits = torch.rand(ids.numel(), generator=g) * 3, torch.randn(ids.numel(), CLASSES, generator=g)
        out.append((ids, loss, logits, ids % CLASSES) if i < 2 else (ids, loss, None, ids % CLASSES))
    return out


def _record_and_save(ledger: ShardedLedger, rank: int, calls: Callable[[int, int], list[tuple]], out: str, **extra) -> None:
    """Record and sync ``calls`` epoch by epoch, then save the owned tables and ``extra`` (what
    the worker's spies collected) to ``out/rank<r>.pt``."""
    for epoch in range(EPOCHS):
        ledger.set_epoch(epoch)
        for call in calls(rank, epoch):
            ledger.record(*call)
        ledger.sync()
    tables = {name: ledger.table(name).clone() for name in ledger.table_names}
    torch.save({"tables": tables, **extra}, Path(out) / f"rank{rank}.pt")


def _assert_owner_slices_are_dense(got: list[dict], dense: Ledger) -> None:
    """The ranks' saved tables, concatenated in rank order, equal the dense ledger's bit for bit."""
    for name in dense.table_names:
        assert torch.equal(torch.cat([g["tables"][name] for g in got]), dense.table(name)), name


def _mixed_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = ShardedLedger(N, CLASSES, fold_chunk=5, **SMALL)
        folds: list[tuple[int, bool]] = []  # (epoch, distinct) of every fold step at the exchange
        fold = ledger._owned._fold

        def spy(ws, ids, targets, presorted=False, distinct=False):
            if presorted:
                folds.append((ledger.epoch, distinct))
            fold(ws, ids, targets, presorted=presorted, distinct=distinct)

        ledger._owned._fold = spy
        _record_and_save(ledger, rank, mixed_calls, out, folds=folds)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_distinct_and_repeated_ids_fold_to_the_dense_ledger_exactly(tmp_path):
    """The fold's two paths — no id repeated in a sender's entries (sorted once, added with
    ``index_add_``) and repeats within and across calls, ranks and fold steps (the
    accumulating scatter) — give the dense ledger's tables bit for bit, over many rounds."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_mixed_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    dense = dense_reference(2, mixed_calls)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    _assert_owner_slices_are_dense(got, dense)
    for g in got:  # both paths ran: distinct steps in epochs 0 and 2, repeated ids in epoch 1
        assert {distinct for epoch, distinct in g["folds"] if epoch != 1} == {True}, g["folds"]
        assert False in {distinct for epoch, distinct in g["folds"] if epoch == 1}, g["folds"]
    assert int(dense.table("count").max()) >= 8 + 1


def windowed_calls(rank: int, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    """Rank r records the ids ``≡ r + epoch (mod 2)`` once each, in id order by calls of 12
    (shuffled within a call), the last call without logits: each call's ids lie in a narrow
    window, as a loader walking shards in order hands them."""
    g = torch.Generator().manual_seed(3000 * epoch + rank)
    ids = torch.arange((rank + epoch) % 2, N, 2)
    out = []
    for i, part in enumerate(ids.split(12)):
        part = part[torch.randperm(part.numel(), generator=g)]
        loss, logits = torch.rand(part.numel(), generator=g) * 3, torch.randn(part.numel(), CLASSES, generator=g)
        out.append((part, loss, None, part % CLASSES) if i == N // 24 else (part, loss, logits, part % CLASSES))
    return out


def _windowed_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = ShardedLedger(N, CLASSES, fold_chunk=5, exchange_round=9, exchange_buckets=16, buffer_block=6)
        cases: set[str] = set()  # how the pack took each (block, other owner) of each round
        exchange = ledger._exchange_round

        def spy(parts, codes, picks, *args):
            for part, block_picks in zip(parts, picks):
                taken = block_picks[1 - rank]
                cases.add("none" if not taken else "all" if taken == part.shape[0] else "some")
            return exchange(parts, codes, picks, *args)

        ledger._exchange_round = spy
        _record_and_save(ledger, rank, windowed_calls, out, cases=cases)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_the_pack_skipping_copying_and_picking_blocks_folds_to_the_dense_ledger_exactly(tmp_path):
    """Records in narrow id windows per call: a round takes none of some buffer blocks, all of
    others (copied whole, no comparison) and part of the rest (compared and gathered); the
    owners' tables are the dense ledger's bit for bit."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_windowed_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    dense = dense_reference(2, windowed_calls)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    _assert_owner_slices_are_dense(got, dense)
    for g in got:
        assert g["cases"] == {"none", "all", "some"}, g["cases"]
    assert int(dense.table("count").sum()) == EPOCHS * N


def _bad_id_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = ShardedLedger(N, CLASSES)
        ledger.record(torch.tensor([1, N - 1, N + rank]) if rank == 1 else torch.tensor([1, N - 1]), torch.ones(3 if rank else 2))
        try:
            ledger.sync()
            message = "no error"
        except ValueError as e:
            message = str(e)
        Path(out, f"rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_an_id_out_of_range_on_one_rank_raises_on_every_rank_without_a_hang(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_bad_id_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank1.txt").read_text() == f"ledger record has id {N + 1} outside [0, {N})"
    assert (tmp_path / "rank0.txt").read_text() == f"another rank's ledger record has an id outside [0, {N})"


def test_one_process_sharded_ledger_matches_dense_and_checks_ids():
    sharded, dense = ShardedLedger(N, CLASSES), Ledger(N, CLASSES)
    for call in calls(0, 0):
        sharded.record(*call)
        dense.record(*call)
    sharded.sync()
    assert (sharded.lo, sharded.hi) == (0, N)
    for name in dense.table_names:
        assert torch.equal(sharded.table(name), dense.table(name)), name
    sharded.record(torch.tensor([3, N]), torch.ones(2))
    with pytest.raises(ValueError, match=f"id {N} outside"):
        sharded.sync()


def test_make_ledger_modes():
    assert type(make_ledger(10, mode="auto")) is Ledger  # one process: dense whatever N
    assert type(make_ledger(10, mode="sharded")) is ShardedLedger
    assert type(make_ledger(AUTO_SHARD_MIN_SAMPLES, mode="dense")) is Ledger
    with pytest.raises(ValueError, match="'striped'"):
        make_ledger(10, mode="striped")  # type: ignore[arg-type]


def test_id_runs_cover_everything_and_never_split_an_id():
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 2, 2, 3, 4, 4, 5])
    for size in (1, 2, 3, 5, 100):
        runs = list(_id_runs(ids, size))
        assert runs[0][0] == 0 and runs[-1][1] == ids.numel(), size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(runs)), size
        assert all(ids[e - 1] != ids[e] for _, e in runs[:-1]), (size, runs)
        assert all(e - s <= size or bool((ids[s:e] == ids[s]).all()) for s, e in runs), (size, runs)  # longer: one id


@pytest.mark.parametrize(
    "case",
    ["distinct dense", "distinct sparse", "sorted", "sorted with repeats", "repeats", "one", "int64"],
)
def test_the_folds_id_order_is_the_stable_sort(case):
    """Every path of ``_sorted_ids`` (counting sort of distinct dense ids, ``torch.sort`` of
    sparse or repeated ids, no sort for sorted ids) gives ``torch.sort(stable=True)``'s ids and
    order, and says whether an id repeats."""
    g = torch.Generator().manual_seed(3)
    ids = {
        "distinct dense": torch.randperm(1000, generator=g)[:600] + 40,
        "distinct sparse": torch.randperm(100_000, generator=g)[:50],
        "sorted": torch.arange(5, 900, 3),
        "sorted with repeats": torch.tensor([1, 2, 2, 3, 7, 7, 7, 9]),
        "repeats": torch.randint(0, 300, (600,), generator=g),
        "one": torch.tensor([17]),
        "int64": torch.randperm(1000, generator=g)[:600] + (1 << 33),
    }[case]
    ids = ids if case == "int64" else ids.to(torch.int32)
    expected, expected_order = torch.sort(ids, stable=True)
    got, order, distinct = _sorted_ids(ids)
    assert torch.equal(got.to(ids.dtype), expected)
    assert torch.equal(ids if order is None else ids[order.long()], expected)
    assert order is None or torch.equal(order.long(), expected_order)
    assert distinct == (expected.unique().numel() == ids.numel())
    assert (order is None) == (case in ("sorted", "sorted with repeats", "one"))


def test_owned_ranges_cover_every_id_once():
    for n, world in ((101, 2), (10, 3), (2, 4), (0, 2)):
        ranges = [owned_range(n, r, world) for r in range(world)]
        assert [i for lo, hi in ranges for i in range(lo, hi)] == list(range(n)), (n, world)


def test_the_counting_sort_reusing_one_scratch_call_after_call_is_the_stable_sort():
    """Rounds of one sync share a ``_Scratch``: growing and shrinking calls (the buffers are
    then views of bigger ones, left over from the call before) still give ``torch.sort``'s order."""
    g = torch.Generator().manual_seed(5)
    scratch = _Scratch(torch.device("cpu"))
    for n in (1000, 5000, 300, 20000, 7):
        ids = (torch.randperm(2 * n, generator=g)[:n] + n).to(torch.int32)
        expected, expected_order = torch.sort(ids, stable=True)
        got, order, distinct = _sorted_ids(ids, scratch)
        assert torch.equal(got.to(torch.int32), expected) and torch.equal(order.long(), expected_order) and distinct, n


def test_sharded_record_runs_on_meta_tensors_so_it_never_reads_values_on_the_host():
    """Meta tensors have no values: any host sync in ``record`` (or its buffering) raises."""
    ledger = ShardedLedger(100, num_classes=10, device="meta")
    ids = torch.randint(100, (64,)).to("meta")
    loss = torch.rand(64, device="meta")
    ledger.record(ids, loss, torch.randn(64, 10, device="meta"), torch.randint(10, (64,)).to("meta"))
    ledger.record(ids, loss, None, torch.randint(10, (64,)).to("meta"))
    ledger.record(ids, loss)
    assert ledger.buffered == 3 * 64


def test_buffer_grows_a_block_at_a_time_and_holds_every_entry_off_the_cpu():
    """On a device other than the CPU (meta: no values, so no host sync) every entry is buffered."""
    ledger = ShardedLedger(N, CLASSES, device="meta", buffer_block=10)
    ledger.reserve(25)
    assert ledger.buffer_bytes == 3 * 10 * ledger.entry_bytes  # whole blocks, no doubling
    for call in calls(0, 0):  # 4 calls of 24 entries: 96 entries in 10 blocks
        ledger.record(*(None if t is None else t.to("meta") for t in call))
    assert (ledger.buffered, ledger.buffer_bytes) == (96, 10 * 10 * ledger.entry_bytes)
    with pytest.raises(RuntimeError, match="96 records are buffered"):
        ledger.release_buffer()


def _buffer_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ledger = ShardedLedger(N, CLASSES, buffer_block=10)
        for call in calls(rank, 0):
            ledger.record(*call)
        recorded = (ledger.buffered, ledger.buffer_bytes)
        ledger.sync()
        ledger.release_buffer()
        released = (ledger.buffered, ledger.buffer_bytes)
        ledger.set_epoch(1)
        ledger.record(*next(iter(calls(rank, 1))))  # reserves what the last sync exchanged, in one piece
        next_epoch = (ledger.buffer_bytes, len({block.untyped_storage().data_ptr() for block in ledger._blocks}))
        ledger.sync()
        ledger.release_buffer()
        ledger.reserve_epoch(1000)  # an epoch of about 1000 records: those of other ranks' ids, in one piece
        estimated = (ledger.buffer_bytes, len({block.untyped_storage().data_ptr() for block in ledger._blocks}))
        ledger.reserve_epoch(5000)  # blocks are held: nothing changes
        torch.save({"recorded": recorded, "released": released, "entry_bytes": ledger.entry_bytes,
                    "next_epoch": next_epoch, "estimated": estimated,
                    "after_second_estimate": ledger.buffer_bytes}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_cpu_buffer_holds_only_other_ranks_entries_and_is_released_after_sync(tmp_path):
    """On the CPU ``record`` buffers only the entries of ids another rank owns (a block at a
    time); the owned ones are folded at once and never reach the exchange. After a release,
    the next epoch's first record reserves the blocks the last sync needed, in one piece, as
    ``reserve_epoch`` reserves its estimate when no blocks are held."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_buffer_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        lo, hi = owned_range(N, rank, 2)
        others = sum(int(((c[0] < lo) | (c[0] >= hi)).sum()) for c in calls(rank, 0))
        assert 0 < others < CALLS * BATCH
        assert got["recorded"] == (others, -(-others // 10) * 10 * got["entry_bytes"])
        assert got["released"] == (0, 0)
        assert got["next_epoch"] == (-(-others // 10) * 10 * got["entry_bytes"], 1)
        expected = -(-1000 * (N - (hi - lo)) // N)  # records of ids this rank does not own
        assert got["estimated"] == (-(-expected // 10) * 10 * got["entry_bytes"], 1)
        assert got["after_second_estimate"] == got["estimated"][0]


def test_exchange_rounds_stay_under_the_limit_unless_one_bucket_exceeds_it():
    g = torch.Generator().manual_seed(3)
    received = torch.randint(0, 9, (3, 40), generator=g)  # [owner, bucket]
    received[1, 17] = 50  # one bucket above the limit: a round alone
    received[:, 30:] = 0
    limit = 20
    bounds = _round_bounds(received, limit)
    assert bounds[0] == 0 and bounds[-1] == received.shape[1] and bounds == sorted(set(bounds))
    for first, last in itertools.pairwise(bounds):
        load = received[:, first:last].sum(1)
        assert bool((load <= limit).all()) or last - first == 1, (first, last, load)
        if last < received.shape[1] and bool(received[:, last].any()):  # greedy: the next bucket did not fit
            assert bool((load + received[:, last] > limit).any()), (first, last)
    assert [17, 18] == [b for b in bounds if b in (17, 18)]
    assert _round_bounds(torch.zeros(2, 8, dtype=torch.long), limit) == []  # nothing to send: no round


@pytest.mark.parametrize("bad", [-1, -(2**32), 2**31 + 5, 2**32 + 3])  # a set high word or a negative low word
def test_sync_names_an_id_outside_the_range_whichever_of_its_words_is_off(bad):
    ledger = ShardedLedger(N, CLASSES)
    ledger.record(torch.tensor([3, bad, 7]), torch.ones(3))
    assert ledger.buffered == 1  # an id outside [0, N) is nobody's: buffered, so the exchange names it
    with pytest.raises(ValueError, match=rf"id {bad} outside \[0, {N}\)"):
        ledger.sync()


def test_releasing_an_owned_statistic_frees_the_owned_tables_statistic_too():
    """An owned statistic is a view of the owned table's (which has a scratch row); releasing
    it lets both go, and a read computes it again."""
    sharded = ShardedLedger(N, CLASSES)
    for call in calls(0, 0):
        sharded.record(*call)
    stats = sharded.stats()
    before = stats.ema_loss.clone()
    whole = weakref.ref(stats.ema_loss._base)  # the owned table's statistic (owned rows + scratch row)
    assert whole() is not None
    stats.release()
    assert whole() is None and stats.computed() == {}
    assert torch.equal(stats.ema_loss, before)


def test_statistics_taken_before_a_load_keep_their_values():
    """``load_state_dict`` overwrites the owned rows in place: statistics taken before it, read
    or not (or released), still give the values of the moment they were taken."""
    sharded, other = ShardedLedger(N, CLASSES), Ledger(N, CLASSES)
    for call in calls(0, 0):
        sharded.record(*call)
    other.record(torch.arange(N), torch.full((N,), 5.0))
    before = sharded.stats()
    expected = sharded.stats().ema_loss.clone()
    sharded.load_state_dict(other.state_dict())
    assert torch.equal(before.ema_loss, expected)
    assert torch.equal(sharded.stats().ema_loss, torch.full((N,), 5.0))
