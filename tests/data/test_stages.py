"""Each stage of a worker's epoch on its own, on real shards where it reads any."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch

from curated_loader.data import stages
from curated_loader.data.control import LoaderControl
from curated_loader.data.errors import ShardError
from curated_loader.data.shards import load_index
from curated_loader.data.snapshot import CurationSnapshot
from curated_loader.data.tario import MemberReader

SIZES = [6, 4, 5]
N = sum(SIZES)


@pytest.fixture
def source(make_shards):
    def make(mode: str = "stream", on_error: str = "raise") -> stages.RawSource:
        control = LoaderControl()
        return stages.RawSource(load_index(make_shards(SIZES)), mode, MemberReader(), stages.SkipAccount(on_error, control, 0))

    return make


def ids(samples) -> list[int]:
    return [s["__id__"] for s in samples]


@pytest.mark.parametrize("mode", ["stream", "indexed"])
def test_raw_source_reads_only_what_is_asked(source, mode):
    src = source(mode)
    wanted = np.array([7, 2, 2, 11])
    got = list(src.ids(wanted))
    assert sorted(ids(got)) == sorted(wanted.tolist())
    assert all(isinstance(s["npy"], bytes) for s in got)  # raw: nothing decoded
    reads = len(wanted) if mode == "indexed" else len(set(wanted.tolist()))  # a stream reads a repeat once
    assert src.reader.io.members == 2 * reads  # two members per sample, none of other samples
    if mode == "indexed":
        assert ids(got) == wanted.tolist() and [s["__repeat__"] for s in got] == [0, 0, 1, 0]


def test_own_samples_take_the_shares_first_count_through_a_seeded_buffer(source):
    src = source()
    mult = np.ones(N, np.int32)
    mult[[0, 3]] = 0
    plain = ids(stages.own_samples(src, np.array([1, 0]), None, mult, count=7))
    assert plain == [6, 7, 8, 9, 1, 2, 4]
    shuffled = [ids(stages.own_samples(src, np.array([1, 0]), None, mult, count=7, shuffle_buffer=4, shuffle_seed=5)) for _ in range(2)]
    assert shuffled[0] == shuffled[1] != plain and sorted(shuffled[0]) == sorted(plain)
    assert ids(stages.own_samples(source("indexed"), np.array([]), np.array([3, 1]), mult, count=2)) == [3, 1]  # in share order


def test_pad_follows_the_share(source):
    src = source()
    assert ids(stages.pad(iter([{"__id__": -1}]), src, np.array([4, 9]))) == [-1, 4, 9]


def test_refill_only_in_skip_mode_without_known_bad_ids(source, caplog):
    draws = []

    def draw(round_):
        draws.append(round_)
        return np.array([1, 2])

    assert ids(stages.refill(iter([]), source("stream", "raise"), draw)) == []
    src = source("stream", "skip")
    src.skips.bad_ids.add(2)
    with caplog.at_level(logging.WARNING, logger="curated_loader"):
        assert ids(stages.refill(iter([]), src, draw, rounds=3)) == [1, 1, 1]
    assert draws == [1, 2, 3] and "after 3 refill rounds" in caplog.text
    first = next(stages.refill(iter([{"__id__": 0}]), src, draw))
    assert first["__id__"] == 0 and draws == [1, 2, 3]  # lazy: nothing drawn before it is needed


def test_skip_resumed_drops_the_first_samples_lazily():
    seen = []
    data = (seen.append(i) or i for i in itertools.count())
    out = stages.skip_resumed(data, 3)
    assert next(out) == 3 and seen == [0, 1, 2, 3]


def test_decode_names_shard_and_key_or_counts_the_skip(source):
    bad = {"__id__": 5, "__key__": "s0000005", "__url__": "x.tar", "npy": b"not npy"}
    decoder = lambda s: (_ for _ in ()).throw(ValueError("broken"))  # noqa: E731
    with pytest.raises(ShardError, match=r"x\.tar \(sample 's0000005'\): cannot decode \(broken\)"):
        list(stages.decode(iter([bad]), decoder, source("stream", "raise").skips))
    skips = source("stream", "skip").skips
    assert list(stages.decode(iter([bad]), decoder, skips)) == []
    assert skips.control.skip_counts()["sample"] == 1 and skips.bad_ids == {5}


def test_decode_hands_numeric_arrays_on_as_tensors(source):
    sample = {"__id__": 0, "__key__": "k", "__url__": "u", "npy": np.arange(3)}
    out = next(stages.decode(iter([sample]), lambda s: s, source().skips))
    assert torch.equal(out["npy"], torch.arange(3))


@pytest.mark.parametrize("resample", [False, True])
def test_attach_curation_reads_weight_and_strength_from_the_snapshot(resample):
    snapshot = CurationSnapshot(4)
    snapshot.publish(torch.ones(4, dtype=torch.bool), torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([0.0, 0.3, 0.6, 1.0]), version=2)
    out = list(stages.attach_curation(iter([{"__id__": 1}, {"__id__": 2}]), snapshot.view(), epoch=2, seed=9, resample=resample))
    assert [s["__weight__"] for s in out] == ([1.0, 1.0] if resample else [2.0, 0.5])
    assert [s["__strength__"] for s in out] == pytest.approx([0.3, 0.6], abs=1 / 510)  # strength is stored as uint8
    assert all(s["__epoch__"] == 2 and s["__seed__"] == 9 for s in out)


def test_augment_runs_only_at_positive_strength_and_keeps_id_and_weight():
    base = {"__url__": "u", "__key__": "k", "__weight__": 2.0}
    samples = [dict(base, __id__=0, __strength__=0.0, x=1), dict(base, __id__=1, __strength__=0.5, x=1)]
    transform = lambda s: {"x": s["x"] + 10}  # noqa: E731  (a transform that drops the metadata)
    augment = lambda s, strength: dict(s, x=s["x"] * 100, got=strength)  # noqa: E731
    out = list(stages.augment(iter(samples), transform, augment))
    assert [s["x"] for s in out] == [11, 1100] and out[1]["got"] == 0.5
    assert [(s["__id__"], s["__weight__"], s["__key__"]) for s in out] == [(0, 2.0, "k"), (1, 2.0, "k")]


def test_to_fields_takes_the_first_alternative_and_skips_samples_without_one(source):
    samples = [
        {"__id__": 0, "__key__": "a", "__url__": "u.tar", "__weight__": 1.5, "jpg": "J", "cls": 3},
        {"__id__": 1, "__key__": "b", "__url__": "u.tar", "__weight__": 1.0, "txt": "T"},
    ]
    fields = [("png", "jpg"), ("cls",)]
    with pytest.raises(ShardError, match=r"u\.tar \(sample 'b'\): missing field 'png;jpg'"):
        list(stages.to_fields(iter(samples), fields, source("stream", "raise").skips))
    skips = source("stream", "skip").skips
    assert list(stages.to_fields(iter(samples), fields, skips)) == [("J", 3, 0, 1.5, 0)]  # id, weight, copy number
    assert skips.bad_ids == {1}
