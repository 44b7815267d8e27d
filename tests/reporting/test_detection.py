"""Noise-detection metrics on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from curated_loader.curation import Reason
from curated_loader.reporting import DETECTION_KEYS, detection_metrics, flagged_of, load_noise_mask

#            0     1      2      3      4     5
FLAGGED = [True, True, False, False, True, False]
NOISY = [True, False, False, False, True, True]
SCORE = [0.9, 0.8, 0.1, 0.2, 0.7, 0.3]


def test_known_answer():
    m = detection_metrics(torch.tensor(FLAGGED), torch.tensor(NOISY), torch.tensor(SCORE))
    assert set(m) == set(DETECTION_KEYS)
    # TP = {0, 4}, FP = {1}, FN = {5}
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # positives score {0.9, 0.7, 0.3}, negatives {0.8, 0.1, 0.2}: 7 of 9 pairs ordered right
    assert m["auroc"] == pytest.approx(7 / 9)
    assert m["flagged"] == 3 and m["noisy"] == 3
    assert math.isnan(m["noisy_kept_frac"])


def test_numpy_inputs_valid_and_keep():
    keep = ~np.array(FLAGGED)
    valid = np.array([True, True, True, True, True, False])  # sample 5 never seen
    m = detection_metrics(np.array(FLAGGED), np.array(NOISY), np.array(SCORE), valid=valid, keep=keep)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(1.0)  # both judged noisy samples flagged
    assert m["auroc"] == pytest.approx(5 / 6)  # positives {0.9, 0.7} vs negatives {0.8, 0.1, 0.2}
    assert m["noisy_kept_frac"] == 0.0  # kept and judged: {2, 3}, both clean
    m = detection_metrics(np.array(FLAGGED), np.array(NOISY), keep=keep)
    assert m["noisy_kept_frac"] == pytest.approx(1 / 3)  # kept {2, 3, 5}: one noisy


def test_only_the_order_of_scores_matters():
    """Large raw scores (e.g. losses, negated margins) are not squashed into ties."""
    big = torch.tensor(SCORE) * 1000.0 + 50.0
    assert detection_metrics(torch.tensor(FLAGGED), torch.tensor(NOISY), big)["auroc"] == pytest.approx(7 / 9)
    reversed_ = -torch.tensor(SCORE)
    assert detection_metrics(torch.tensor(FLAGGED), torch.tensor(NOISY), reversed_)["auroc"] == pytest.approx(2 / 9)


def test_perfect_and_degenerate_cases():
    mask = torch.tensor([True, False, True, False])
    m = detection_metrics(mask, mask, mask.float())
    assert m["precision"] == m["recall"] == m["f1"] == m["auroc"] == 1.0
    m = detection_metrics(torch.zeros(4, dtype=torch.bool), mask, torch.zeros(4))
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["flagged"] == 0
    assert m["auroc"] == 0.5  # constant score: no ranking
    m = detection_metrics(mask, torch.zeros(4, dtype=torch.bool), torch.arange(4.0))
    assert math.isnan(m["auroc"])  # a single class: AUROC undefined
    with pytest.raises(ValueError, match="entries"):
        detection_metrics(torch.ones(3, dtype=torch.bool), mask)


def test_flagged_of_reason_codes():
    reason = torch.tensor([int(r) for r in Reason], dtype=torch.int8)
    assert flagged_of(reason).tolist() == [r.name.startswith("FLAGGED_") for r in Reason]


def test_load_noise_mask(tmp_path):
    path = tmp_path / "mask.npy"
    np.save(path, np.array([0, 1, 1], dtype=np.uint8))
    assert load_noise_mask(str(path)).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="3 entries"):
        load_noise_mask(str(path), num_samples=4)
