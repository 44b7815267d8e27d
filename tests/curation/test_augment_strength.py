"""Augmentation strength from difficulty."""

from __future__ import annotations

import pytest
import torch

from curated_loader.curation import AugmentStrength, Ledger
from curated_loader.curation.policies import difficulty, strength


def _stats(unseen: int = 0):
    loss = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0, 8.0])
    ledger = Ledger(len(loss) + unseen)
    ledger.record(torch.arange(len(loss)), loss)
    return ledger.stats()


def test_difficulty_is_half_at_the_median_and_monotone():
    stats = _stats(unseen=2)
    d = difficulty(stats)
    median = float(stats.quantile(stats.ema_loss, 0.5))
    assert median == 0.5 and d[2] == 0.5
    assert (d[:6].diff() > 0).all() and d[0] == 0 and float(d[5]) < 1
    assert (d[6:] == 0.5).all()  # unseen


@pytest.mark.parametrize("mapping", ["easy_strong", "hard_strong", "constant"])
def test_mappings_stay_in_range_and_spare_suspects(mapping):
    stats = _stats()
    keep = torch.tensor([True, True, True, True, True, False])
    s = strength(stats, 3, keep=keep, mapping=mapping, min_strength=0.2, max_strength=0.8).strength
    assert s[5] == 0.0
    assert ((s[:5] >= 0.2) & (s[:5] <= 0.8)).all()
    steps = s[:5].diff()
    if mapping == "easy_strong":
        assert (steps < 0).all() and s[0] == pytest.approx(0.8)
    elif mapping == "hard_strong":
        assert (steps > 0).all() and s[0] == pytest.approx(0.2)
    else:
        assert (s[:5] == 0.8).all()


def test_strength_policy_validates_its_range():
    with pytest.raises(ValueError, match="min_strength"):
        AugmentStrength(min_strength=0.9, max_strength=0.1).apply(_stats(), 3, torch.Generator())
    with pytest.raises(ValueError, match="mapping"):
        AugmentStrength(mapping="sideways").apply(_stats(), 3, torch.Generator())  # type: ignore[arg-type]
