"""Checks shared by the signal and image augmentation tests."""

from __future__ import annotations

import math
import pickle
from typing import Any

import torch

from curated_loader.augment import Augmentation, sample_seed

STRENGTHS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def make_sample(x: torch.Tensor, field: str, sid: int, epoch: int = 0, seed: int = 7, repeat: int = 0) -> dict[str, Any]:
    return {
        field: x.clone(),
        "__id__": sid,
        "__epoch__": epoch,
        "__seed__": seed,
        "__repeat__": repeat,
        "__key__": f"k{sid:06d}",
        "__url__": "shard-000000.tar",
    }


def batch_of(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.unsqueeze(0).expand(n, *x.shape).clone()


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = a.double().flatten().sort().values, b.double().flatten().sort().values
    grid = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, grid, right=True).double() / a.numel()
    cdf_b = torch.searchsorted(b, grid, right=True).double() / b.numel()
    return float((cdf_a - cdf_b).abs().max())


def ks_critical(n: int, m: int, alpha: float = 0.001) -> float:
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


def check_identity_at_zero(aug: Augmentation, x: torch.Tensor) -> None:
    sample = make_sample(x, aug.field, sid=3)
    out = aug(sample, 0.0)
    assert torch.equal(out[aug.field], x)
    xb = batch_of(x, 6) + torch.arange(6.0).reshape(-1, *([1] * x.dim())) * 0.01
    strength = torch.tensor([0.0, 1.0, 0.0, 0.5, 0.0, 0.0])
    yb = aug.batch(xb, strength, sample_seed(7, 0, torch.arange(6)))
    for i in (0, 2, 4, 5):
        assert torch.equal(yb[i], xb[i])
    assert torch.equal(aug.batch(xb, torch.zeros(6), sample_seed(7, 0, torch.arange(6))), xb)


def check_paths_agree(aug: Augmentation, x: torch.Tensor, atol: float = 1e-5) -> None:
    """Per-sample hook and batched form give the same output for the same sample."""
    n = 12
    ids = torch.arange(100, 100 + n)
    strength = torch.linspace(0.0, 1.0, n)
    batched = aug.batch(batch_of(x, n), strength, sample_seed(7, 2, ids, 1))
    for i in range(n):
        single = aug(make_sample(x, aug.field, int(ids[i]), epoch=2, repeat=1), float(strength[i]))
        torch.testing.assert_close(single[aug.field], batched[i], atol=atol, rtol=1e-5)


def check_params_agree(aug: Augmentation, x: torch.Tensor, monkeypatch: Any) -> None:
    """The parameters drawn per sample equal the batched ones, and so do their distributions."""
    seen: list[dict[str, torch.Tensor]] = []
    original = type(aug).params

    def recording(self: Augmentation, *args: Any) -> dict[str, torch.Tensor]:
        p = original(self, *args)
        seen.append(p)
        return p

    monkeypatch.setattr(type(aug), "params", recording)
    n = 200
    strength = 0.8
    aug.batch(batch_of(x, n), torch.full((n,), strength), sample_seed(7, 0, torch.arange(n)))
    batched = seen.pop()
    for i in range(n):
        aug(make_sample(x, aug.field, i), strength)
    per_sample = {k: torch.cat([p[k] for p in seen]) for k in batched}
    for key, values in batched.items():
        assert torch.equal(per_sample[key], values), key
        if values.dtype.is_floating_point and values.dim() == 1:
            assert ks_statistic(per_sample[key], values) < ks_critical(n, n)


def check_monotone(aug: Augmentation, x: torch.Tensor, n: int = 256) -> list[float]:
    """Mean |out - in| over many seeds grows with strength."""
    xb = batch_of(x, n)
    seeds = sample_seed(11, 0, torch.arange(n))
    mags = [float((aug.batch(xb, torch.full((n,), s), seeds) - xb).abs().mean()) for s in STRENGTHS]
    assert mags[0] == 0.0
    assert all(b > a for a, b in zip(mags, mags[1:])), mags
    return mags


def check_deterministic(aug: Augmentation, x: torch.Tensor) -> None:
    a = aug(make_sample(x, aug.field, 5, epoch=1), 1.0)[aug.field]
    b = aug(make_sample(x, aug.field, 5, epoch=1), 1.0)[aug.field]
    assert torch.equal(a, b)
    ids = torch.arange(32)
    xb = batch_of(x, 32)
    y1 = aug.batch(xb, torch.ones(32), sample_seed(7, 1, ids))
    y2 = aug.batch(xb, torch.ones(32), sample_seed(7, 2, ids))
    assert torch.equal(y1, aug.batch(xb, torch.ones(32), sample_seed(7, 1, ids)))
    assert not torch.equal(y1, y2)
    # a sample's result does not depend on the batch around it
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(aug.batch(xb, torch.ones(32), sample_seed(7, 1, ids[perm])), y1[perm])


def check_picklable(aug: Augmentation, x: torch.Tensor) -> None:
    clone = pickle.loads(pickle.dumps(aug))
    sample = make_sample(x, aug.field, 9)
    assert torch.equal(clone(sample, 0.7)[aug.field], aug(sample, 0.7)[aug.field])


def count_calls(monkeypatch: Any, owner: Any, name: str) -> list[int]:
    """Wrap ``owner.name`` to count its calls; returns a one-element counter."""
    counter = [0]
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return counter


def calls_per_batch(aug: Augmentation, x: torch.Tensor, monkeypatch: Any, owner: Any, name: str) -> list[int]:
    """Calls of ``owner.name`` for batches of 1, 8 and 64 samples."""
    counter = count_calls(monkeypatch, owner, name)
    counts = []
    for n in (1, 8, 64):
        counter[0] = 0
        aug.batch(batch_of(x, n), torch.ones(n), sample_seed(7, 0, torch.arange(n)))
        counts.append(counter[0])
    return counts
