"""Ledger tables against a straightforward per-entry reference, duplicates included."""

from __future__ import annotations

import pytest
import torch

from curated_loader.curation import Ledger
from ledger_replay import FIXTURE, assert_same_decision, replay, stats_dict


def _reference(calls, n: int, ema: float) -> dict[str, torch.Tensor]:
    """Entry-by-entry bookkeeping with Python loops (the rules the ledger documents)."""
    ref = {
        k: [0.0] * n
        for k in (
            "count",
            "loss_sum",
            "logit_count",
            "margin_sum",
            "gold_prob_sum",
            "correct_count",
            "forget_count",
        )
    }
    ref["ema_loss"], ref["last_loss"], ref["last_correct"], ref["label"] = (
        [0.0] * n,
        [0.0] * n,
        [-1] * n,
        [-1] * n,
    )
    for ids, loss, logits, targets in calls:
        per_id: dict[int, list[float]] = {}
        for j, i in enumerate(ids.tolist()):
            value = float(loss[j])
            per_id.setdefault(i, []).append(value)
            ref["count"][i] += 1
            ref["loss_sum"][i] += value
            ref["last_loss"][i] = value
            ref["label"][i] = int(targets[j])
            row, t = logits[j], int(targets[j])
            others = torch.cat([row[:t], row[t + 1 :]])
            ref["logit_count"][i] += 1
            ref["margin_sum"][i] += float(row[t] - others.max())
            ref["gold_prob_sum"][i] += float(torch.softmax(row, 0)[t])
            correct = int(row.argmax() == t)
            ref["correct_count"][i] += correct
            ref["forget_count"][i] += int(ref["last_correct"][i] == 1 and correct == 0)
            ref["last_correct"][i] = correct
        for i, values in per_id.items():
            mean = sum(values) / len(values)
            first = ref["count"][i] == len(values)
            ref["ema_loss"][i] = mean if first else ema * ref["ema_loss"][i] + (1 - ema) * mean
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in ref.items()}


def _random_calls(n: int, calls: int, batch: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(calls):
        ids = torch.randint(n, (batch,), generator=g)  # duplicates on purpose
        logits = torch.randn(batch, classes, generator=g)
        targets = torch.randint(classes, (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        out.append((ids, loss, logits, targets))
    return out


@pytest.mark.parametrize("classes", [4, 200])  # one code word (table lookup), two words (arithmetic)
def test_tables_match_entrywise_reference_with_duplicates(classes):
    n = 20
    calls = _random_calls(n, calls=12, batch=16, classes=classes)
    ledger = Ledger(n, num_classes=classes, ema=0.8)
    for call in calls:
        ledger.record(*call)
    ledger.sync()
    ref = _reference(calls, n, ema=0.8)
    for name, expected in ref.items():
        got = ledger.table(name).to(torch.float64)
        assert torch.allclose(got, expected, atol=1e-5), name


def test_duplicates_in_one_call_accumulate():
    ledger = Ledger(4)
    ledger.record(torch.tensor([2, 2, 2, 0]), torch.tensor([1.0, 2.0, 3.0, 5.0]))
    stats = ledger.stats()
    assert stats.count.tolist() == [1, 0, 3, 0]
    assert torch.allclose(stats.mean_loss, torch.tensor([5.0, 0.0, 2.0, 0.0]))
    assert stats.ema_loss[2] == 2.0  # first observation: the call's mean
    assert stats.last_loss[2] == 3.0  # call order
    ledger.record(torch.tensor([2, 2]), torch.tensor([4.0, 6.0]))
    assert torch.isclose(ledger.stats().ema_loss[2], torch.tensor(0.9 * 2.0 + 0.1 * 5.0))


def test_forgetting_follows_call_order_within_a_call():
    ledger = Ledger(2, num_classes=2)
    right, wrong = [4.0, 0.0], [0.0, 4.0]
    logits = torch.tensor([right, wrong, right, wrong])
    ledger.record(torch.tensor([1, 1, 1, 1]), torch.zeros(4), logits, torch.zeros(4, dtype=torch.long))
    stats = ledger.stats()
    assert stats.forgetting.tolist() == [0, 2]
    assert stats.correct_frac[1] == 0.5
    assert ledger.table("last_correct")[1] == 0


def test_margin_confidence_and_seen_masks():
    ledger = Ledger(3, num_classes=3)
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    ledger.record(torch.tensor([0, 1]), torch.zeros(2), logits, torch.tensor([0, 2]))
    ledger.record(torch.tensor([2]), torch.ones(1))
    stats = ledger.stats()
    assert torch.allclose(stats.aum[:2], torch.tensor([1.0, -2.0]))
    assert torch.allclose(stats.confidence[:2], torch.softmax(logits, 1)[[0, 1], [0, 2]])
    assert stats.seen.tolist() == [True, True, True]
    assert stats.has_logits.tolist() == [True, True, False]
    assert stats.labels.tolist() == [0, 2, -1]
    assert stats.num_seen == 3


def test_sync_is_idempotent_and_one_process_folds_at_record():
    ledger = Ledger(5)
    ledger.set_epoch(3)
    ledger.record(torch.tensor([1, 4]), torch.tensor([1.0, 2.0]))
    assert ledger.stats(sync=False).num_seen == 2  # nothing to fold on one process
    assert ledger.table("count", pending=True).tolist() == [0, 0, 0, 0, 0]
    ledger.sync()
    first = {k: ledger.table(k).clone() for k in ledger.table_names}
    ledger.sync()
    ledger.sync()
    for name, value in first.items():
        assert torch.equal(ledger.table(name), value), name
    assert ledger.table("last_epoch").tolist() == [-1, 3, -1, -1, 3]


def test_state_dict_round_trip_keeps_pending_records():
    ledger = Ledger(6, num_classes=2)
    ledger.record(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), torch.randn(2, 2), torch.tensor([0, 1]))
    ledger.sync()
    ledger.record(torch.tensor([1, 5]), torch.tensor([3.0, 4.0]))
    restored = Ledger(6, num_classes=2)
    restored.load_state_dict(ledger.state_dict())
    a, b = ledger.stats(), restored.stats()
    for field in ("count", "mean_loss", "ema_loss", "aum", "labels"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_load_state_dict_names_missing_keys():
    state = Ledger(3).state_dict()
    del state["tables"]["ema_loss"]
    del state["epoch"]
    with pytest.raises(KeyError, match="epoch.*tables.ema_loss"):
        Ledger(3).load_state_dict(state)
    with pytest.raises(ValueError, match="4 samples"):
        Ledger(3).load_state_dict(Ledger(4).state_dict())


def test_to_moves_every_table():
    ledger = Ledger(3).to("meta")
    assert all(ledger.table(k).device.type == "meta" for k in ledger.table_names)


def test_add_column_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="unknown reduction"):
        Ledger(2)._add_column("x", "max")  # type: ignore[arg-type]


def test_record_runs_on_meta_tensors_so_it_never_reads_values_on_the_host():
    """A host sync needs a value; meta tensors have none, so any ``.item()``, ``.tolist()``,
    boolean indexing or data-dependent shape inside ``record`` raises here."""
    ledger = Ledger(100, num_classes=10).to("meta")
    ids = torch.randint(100, (64,)).to("meta")
    logits = torch.randn(64, 10, device="meta")
    targets = torch.randint(10, (64,)).to("meta")
    ledger.record(ids, torch.randn(64, device="meta"), logits, targets)
    ledger.record(ids, torch.randn(64, device="meta"))
    assert ledger.table("loss_sum").device.type == "meta"


def test_layout_fits_48_bytes_per_sample_with_ten_classes():
    ledger = Ledger(1000, num_classes=10)
    ledger.record(torch.arange(8), torch.ones(8), torch.randn(8, 10), torch.arange(8))
    assert ledger.bytes_per_sample <= 48.1
    assert Ledger(1000, num_classes=5000).layout.words == 2  # wider labels: one more word


def test_labels_predictions_and_epochs_round_trip_through_the_code_words():
    for classes in (2, 10, 1023, 5000):
        ledger = Ledger(4, num_classes=classes)
        ledger.set_epoch(7)
        logits = torch.full((3, classes), -5.0)
        logits[0, classes - 1] = logits[1, 0] = logits[2, 0] = 5.0
        ledger.record(torch.tensor([0, 1, 2]), torch.ones(3), logits, torch.tensor([classes - 1, 1, 0]))
        ledger.record(torch.tensor([3]), torch.ones(1), targets=torch.tensor([classes - 1]))
        assert ledger.table("label").tolist() == [classes - 1, 1, 0, classes - 1], classes
        assert ledger.table("last_pred").tolist() == [classes - 1, 0, 0, -1], classes
        assert ledger.table("last_correct").tolist() == [1, 0, 1, -1], classes
        assert ledger.table("last_epoch").tolist() == [7, 7, 7, 7], classes


def test_replay_gives_the_recorded_stats_and_decision():
    """The stream in ``ledger_replay`` gives the statistics and the decision recorded in the
    fixture (made with the ledger of separate length-N tables, before it was packed)."""
    recorded = torch.load(FIXTURE)
    ledger, decision = replay()
    for name, value in stats_dict(ledger).items():
        expected = recorded["stats"][name]
        if isinstance(value, torch.Tensor):
            dtype = torch.int32 if name == "labels" else expected.dtype  # labels were int64 when it was made
            assert value.dtype == dtype and value.shape == expected.shape, name
            assert torch.allclose(value.double(), expected.double(), rtol=1e-5, atol=1e-6), name
        else:
            assert value == expected, name
    assert_same_decision(decision, recorded["decision"])


def test_batch_size_buffers_are_bounded_and_reused():
    ledger = Ledger(50, num_classes=3)
    for b in (4, 5, 6, 7, 8, 4):
        ledger.record(torch.arange(b), torch.ones(b), torch.randn(b, 3), torch.zeros(b, dtype=torch.long))
    assert len(ledger._workspaces) <= 4
    assert ledger.table("count")[:4].tolist() == [6.0] * 4 and ledger.table("count")[8:].sum() == 0


def test_stats_describe_the_ledger_at_the_call_even_when_read_after_new_records():
    """Statistics are computed when first read, yet a read after more records (or a sync) still
    gives the values of the moment ``stats()`` was called; every field decodes as the tables."""
    g = torch.Generator().manual_seed(4)
    ledger = Ledger(30, num_classes=5)
    for epoch in range(2):
        ledger.set_epoch(epoch)
        ids = torch.randperm(30, generator=g)[:20]
        ledger.record(ids, torch.rand(20, generator=g), torch.randn(20, 5, generator=g), torch.randint(5, (20,), generator=g))
    names = {"ema_loss": "ema_loss", "last_loss": "last_loss", "labels": "label", "last_epoch": "last_epoch",
             "forgetting": "forget_count", "count": "count"}
    before = {field: ledger.table(table).clone() for field, table in names.items()}
    stats, read_now = ledger.stats(), ledger.stats()
    read_now_values = {field: getattr(read_now, field) for field in names}
    ledger.set_epoch(2)
    ledger.record(torch.arange(30), torch.full((30,), 9.0), torch.randn(30, 5, generator=g), torch.zeros(30, dtype=torch.long))
    ledger.sync()
    for field in names:
        value = getattr(stats, field)
        assert torch.equal(value.to(before[field].dtype), before[field]), field
        assert torch.equal(value, read_now_values[field]), field
    assert stats.labels.dtype == torch.int32 and stats.last_epoch.dtype == torch.int32
    assert not torch.equal(ledger.stats().ema_loss, stats.ema_loss)


def test_a_released_statistic_is_computed_again_as_it_was_even_after_new_records():
    """``LedgerStats.release`` lets computed statistics go; a later read computes the same
    values, also after the ledger recorded more (it computes them before its table changes)."""
    g = torch.Generator().manual_seed(5)
    ledger = Ledger(40, num_classes=4)
    ledger.record(torch.arange(40), torch.rand(40, generator=g), torch.randn(40, 4, generator=g), torch.randint(4, (40,), generator=g))
    stats = ledger.stats()
    ema, labels = stats.ema_loss.clone(), stats.labels.clone()
    assert set(stats.computed()) == {"ema_loss", "labels"}
    stats.release(keep={"labels"})
    assert set(stats.computed()) == {"labels"}
    assert torch.equal(stats.ema_loss, ema)  # computed again
    stats.release()
    assert stats.computed() == {}
    ledger.set_epoch(1)
    ledger.record(torch.arange(40), torch.full((40,), 7.0), torch.randn(40, 4, generator=g), torch.zeros(40, dtype=torch.long))
    assert set(stats.computed()) >= {"ema_loss", "labels"}  # computed before the table changed, kept for good
    stats.release()
    assert torch.equal(stats.ema_loss, ema) and torch.equal(stats.labels, labels)
    assert not torch.equal(ledger.stats().ema_loss, ema)
