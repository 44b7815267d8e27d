"""Compose, FromCallable and augment_batch."""

from __future__ import annotations

import pickle

import pytest
import torch

import curated_loader.augment.seeding as seeding_mod
from aug_checks import (
    batch_of,
    calls_per_batch,
    check_deterministic,
    check_identity_at_zero,
    check_monotone,
    check_paths_agree,
    check_picklable,
    make_sample,
)
from curated_loader.augment import (
    AmplitudeScale,
    ColorJitter,
    Compose,
    FromCallable,
    GaussianNoise,
    HorizontalFlip,
    RandomErasing,
    RandomResizedCrop,
    SampleAugment,
    Shift,
    TimeStretch,
    augment_batch,
    normal,
    sample_seed,
)


def _image() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    return torch.stack([xx, yy, 0.5 + 0.3 * torch.sin(5 * xx * yy)])


def _signal() -> torch.Tensor:
    return torch.sin(torch.linspace(0, 9, 40)).unsqueeze(0)


def add_label_noise_flag(sample: dict, strength: float) -> dict:
    """A module-level user hook (picklable)."""
    out = dict(sample)
    out["flag"] = strength
    return out


class Doubling:
    """A user object with its own batched form."""

    field = "x"

    def __call__(self, sample: dict, strength: float) -> dict:
        return {**sample, "x": sample["x"] * 2}

    def batch(self, x, strength, seeds):
        return x * 2


def _image_pipeline() -> Compose:
    return Compose([
        RandomResizedCrop(field="png"),
        HorizontalFlip(field="png"),
        ColorJitter(field="png"),
        RandomErasing(field="png"),
        GaussianNoise(0.05, field="png"),
    ])


@pytest.mark.parametrize("which", ["image", "signal"])
def test_shared_contract(which):
    if which == "image":
        aug, x = _image_pipeline(), _image()
    else:
        aug, x = Compose([Shift(4), AmplitudeScale(0.3), GaussianNoise(0.1)]), _signal()
    check_identity_at_zero(aug, x)
    check_monotone(aug, x)
    check_paths_agree(aug, x)
    check_deterministic(aug, x)
    check_picklable(aug, x)


def test_members_draw_independent_parameters():
    n = 4000
    aug = Compose([AmplitudeScale(0.5), AmplitudeScale(0.5)])
    x = torch.ones(n, 1)
    seeds = sample_seed(0, 0, torch.arange(n))
    first = aug.augs[0].batch(x, torch.ones(n), seeds)
    both = aug.batch(x, torch.ones(n), seeds)
    # with shared streams the product would be first**2 exactly; independent draws are not
    assert not torch.allclose(both, first**2)
    d0, d1 = aug._draws(seeds)
    s0 = aug.augs[0].params(torch.ones(n), d0, x.shape)["scale"]
    s1 = aug.augs[1].params(torch.ones(n), d1, x.shape)["scale"]
    torch.testing.assert_close(both[:, 0], s0 * s1)
    assert abs(float(torch.corrcoef(torch.stack([s0, s1]))[0, 1])) < 0.08


def test_compose_batched_is_one_kernel_call_per_member(monkeypatch):
    aug = _image_pipeline()
    counts = calls_per_batch(aug, _image(), monkeypatch, torch.nn.functional, "grid_sample")
    assert counts == [1, 1, 1]
    counts = calls_per_batch(aug, _image(), monkeypatch, seeding_mod, "_mixed_columns")
    assert counts == [1, 1, 1]  # every member's parameters come from one block per batch


def test_compose_mixes_block_and_declared_element_draws_once(monkeypatch):
    """The noise's per-element normals are mixed with the block, and equal the ones drawn alone."""
    noise = GaussianNoise(sigma_max=0.3)
    aug = Compose([Shift(3), noise])
    assert calls_per_batch(aug, _signal(), monkeypatch, seeding_mod, "_mixed_columns") == [1, 1, 1]
    monkeypatch.undo()
    seeds = sample_seed(7, 2, torch.arange(5))
    drawn = aug._draws(seeds, torch.Size((5, *_signal().shape)))[1]
    assert set(drawn.elements) == {0}
    torch.testing.assert_close(drawn.normal(0, _signal().shape), normal(seeds, (1, 0), _signal().shape), rtol=0, atol=0)


def test_per_sample_members_may_use_different_fields():
    aug = Compose([HorizontalFlip(p_max=1.0, field="png"), Shift(3, field="x"), add_label_noise_flag])
    sample = make_sample(_image(), "png", 4)
    sample["x"] = _signal()
    out = aug(sample, 1.0)
    assert torch.equal(out["png"], _image().flip(-1))
    assert out["flag"] == 1.0
    assert aug(sample, 0.0) is sample
    assert isinstance(aug, SampleAugment)
    assert aug.field is None and _image_pipeline().field == "png"


def test_from_callable_protocol():
    wrapped = FromCallable(add_label_noise_flag)
    sample = make_sample(_signal(), "x", 1)
    assert wrapped(sample, 0.5)["flag"] == 0.5
    assert wrapped(sample, 0.0) is sample  # strength 0 never reaches the user hook
    with pytest.raises(TypeError):
        wrapped.batch(_signal().unsqueeze(0), torch.ones(1), torch.zeros(1, dtype=torch.long))
    clone = pickle.loads(pickle.dumps(Compose([add_label_noise_flag])))
    assert clone(sample, 0.25)["flag"] == 0.25
    with pytest.raises(TypeError):
        FromCallable(3)


def test_user_object_with_batch_joins_the_batched_path():
    aug = Compose([Doubling()])
    x = batch_of(_signal(), 4)
    y = aug.batch(x, torch.tensor([1.0, 0.0, 0.5, 0.0]), sample_seed(0, 0, torch.arange(4)))
    assert torch.equal(y, x * torch.tensor([2.0, 1.0, 2.0, 1.0]).reshape(-1, 1, 1))


def test_augment_batch_convenience():
    aug = _image_pipeline()
    x = batch_of(_image(), 6)
    ids = torch.arange(20, 26)
    y = augment_batch(aug, x, 0.7, ids, epoch=3, seed=11)
    assert torch.equal(y, aug.batch(x, torch.full((6,), 0.7), sample_seed(11, 3, ids)))
    rep = augment_batch(aug, x, 0.7, ids, epoch=3, seed=11, repeat=torch.ones(6, dtype=torch.long))
    assert not torch.equal(rep, y)
    per_sample = aug(make_sample(_image(), "png", 21, epoch=3, seed=11, repeat=1), 0.7)["png"]
    torch.testing.assert_close(per_sample, rep[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(augment_batch(aug, x, torch.zeros(6), ids, epoch=3, seed=11), x)


def test_unknown_field_is_a_clear_error():
    with pytest.raises(KeyError, match="png"):
        HorizontalFlip()(make_sample(_signal(), "x", 0), 1.0)


class _AugmentedSamples(torch.utils.data.Dataset):
    """Stand-in for the loader: builds samples and applies the hook in the worker."""

    def __init__(self, aug, epoch: int) -> None:
        self.aug, self.epoch = aug, epoch

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> torch.Tensor:
        sample = make_sample(_image(), "png", i, epoch=self.epoch, seed=5)
        return self.aug(sample, 0.9)["png"]


def test_same_result_whatever_the_worker_count():
    aug = _image_pipeline()
    results = []
    for workers, batch_size in ((0, 24), (2, 5)):
        loader = torch.utils.data.DataLoader(_AugmentedSamples(aug, 1), batch_size=batch_size, num_workers=workers)
        results.append(torch.cat(list(loader)))
    assert torch.equal(results[0], results[1])
    batched = augment_batch(aug, batch_of(_image(), 24), 0.9, torch.arange(24), epoch=1, seed=5)
    torch.testing.assert_close(results[0], batched, atol=1e-5, rtol=1e-5)


def test_compile_is_off_by_default_and_falls_back_to_eager(monkeypatch, caplog):
    members = [Shift(4), AmplitudeScale(0.3), GaussianNoise(0.1)]
    assert Compose(members).compile is False
    x, seeds = batch_of(_signal(), 8), sample_seed(1, 2, torch.arange(8))
    eager = Compose(members).batch(x, torch.full((8,), 0.6), seeds)

    def broken_compile(fn):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    aug = Compose(members, compile=True)
    clone = pickle.loads(pickle.dumps(aug))  # nothing compiled travels with the object
    with caplog.at_level("WARNING", logger="curated_loader"):
        assert torch.equal(aug.batch(x, torch.full((8,), 0.6), seeds), eager)
    assert "no C++ compiler" in caplog.text and aug.compile is False
    assert clone.compile is True
    assert torch.equal(clone.batch(x, torch.full((8,), 0.6), seeds), eager)


def _signal_members() -> list:
    return [Shift(4), AmplitudeScale(0.2), TimeStretch(0.1), GaussianNoise(0.05)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compiled_compose_equals_eager_and_compiles_once():
    """``compile=True``: one dynamo graph, no graph break, no fallback, for a second batch
    size, another strength pattern (per sample / one float), epoch and seed. Outputs equal
    eager within float32 rounding; a different integer draw (a shift by another step) would
    move values of these random signals by O(1), far beyond the tolerance."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled, eager = Compose(_signal_members(), compile=True), Compose(_signal_members())
    g = torch.Generator().manual_seed(0)
    strength = torch.rand(16, generator=g)
    strength[::5] = 0.0
    for x, s, epoch, seed in ((torch.randn(16, 40, generator=g), strength, 0, 0),
                              (torch.randn(5, 40, generator=g), 0.8, 3, 9)):
        ids = torch.arange(x.shape[0]) + 100
        got = augment_batch(compiled, x, s, ids, epoch, seed)
        want = augment_batch(eager, x, s, ids, epoch, seed)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert not torch.equal(got, x)
    x = torch.randn(16, 40, generator=g)
    kept = strength == 0
    assert torch.equal(augment_batch(compiled, x, strength, torch.arange(16), 1, 1)[kept], x[kept])  # strength 0: bit for bit
    assert compiled.compile is True  # no failure, no fallback to eager
    assert counters["stats"]["unique_graphs"] == 1  # the second batch size etc. did not recompile
    assert sum(counters["graph_break"].values()) == 0
