"""Bad shards: a clear error naming the shard/key, or (on_error="skip") an exact count."""

import io
import tarfile

import numpy as np
import pytest

from curated_loader.data.errors import ShardError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.shards import ShardIndex
from tests.conftest import add_member

pytestmark = pytest.mark.timeout(120)


def npy_bytes(value: float) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.full(4, value, dtype=np.float32))
    return buf.getvalue()


def write_tar(path, samples):
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for suffix, data in members.items():
                add_member(tf, f"{key}.{suffix}", data)


def good(i):
    return (f"s{i:04d}", {"npy": npy_bytes(i), "cls": str(i % 10).encode()})


def run(path_or_index, workers=0, **kw):
    ds = CuratedStream(path_or_index, fields=("npy", "cls"), batch_size=4, decode=(), **kw)
    loader = CuratedLoader(ds, num_workers=workers)
    ids = [int(i) for b in loader for i in b[2]]
    return ds, ids


def index_for(urls, counts):
    return ShardIndex([str(u) for u in urls], np.asarray(counts))


def test_missing_shard(tmp_path):
    write_tar(tmp_path / "a.tar", [good(i) for i in range(5)])
    index = index_for([tmp_path / "a.tar", tmp_path / "gone.tar"], [5, 5])
    with pytest.raises(ShardError, match=r"gone\.tar: shard file does not exist"):
        run(index, shuffle=False)
    ds, ids = run(index, on_error="skip", shuffle=False)
    assert sorted(set(ids)) == list(range(5)) and ds.control.skip_counts()["shard"] == 5


def test_not_a_tar(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(ShardError, match=r"junk\.tar: not a tar file"):
        run(str(tmp_path / "junk.tar"))


def test_truncated_tar(tmp_path):
    write_tar(tmp_path / "t.tar", [good(i) for i in range(6)])
    index = index_for([tmp_path / "t.tar"], [6])
    data = (tmp_path / "t.tar").read_bytes()
    (tmp_path / "t.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"t\.tar.*(truncated|holds)"):
        run(index)
    ds, ids = run(index, on_error="skip")
    counts = ds.control.skip_counts()
    assert len(set(ids)) + counts["missing"] == 6 and counts["missing"] > 0


def test_corrupt_member_names_key(tmp_path):
    samples = [good(i) for i in range(6)]
    samples[3] = ("s0003", {"npy": b"\x93NUMPY garbage", "cls": b"3"})
    write_tar(tmp_path / "c.tar", samples)
    ds_kw = dict(fields=("npy", "cls"), batch_size=4, decode=(), shuffle=False)
    with pytest.raises(ShardError, match=r"c\.tar \(sample 's0003'\): cannot decode"):
        list(CuratedLoader(CuratedStream(str(tmp_path / "c.tar"), **ds_kw)))
    ds = CuratedStream(str(tmp_path / "c.tar"), on_error="skip", **ds_kw)
    batches = list(CuratedLoader(ds))
    ids = [int(i) for b in batches for i in b[2]]
    assert 3 not in ids and ds.control.skip_counts()["sample"] >= 1
    assert len(ids) == 6 and len(batches) == 2  # the gap is refilled from kept samples: batch count holds


def test_missing_field_names_key_and_field(tmp_path):
    samples = [good(i) for i in range(4)]
    samples[2] = ("s0002", {"npy": npy_bytes(2)})
    write_tar(tmp_path / "m.tar", samples)
    with pytest.raises(ShardError, match=r"m\.tar \(sample 's0002'\): missing field 'cls'"):
        run(str(tmp_path / "m.tar"))
    ds, ids = run(str(tmp_path / "m.tar"), on_error="skip")
    assert 2 not in ids and ds.control.skip_counts()["sample"] >= 1


def test_empty_shard_is_fine(tmp_path):
    write_tar(tmp_path / "a.tar", [good(i) for i in range(3)])
    write_tar(tmp_path / "empty.tar", [])
    ds, ids = run([str(tmp_path / "a.tar"), str(tmp_path / "empty.tar")])
    assert sorted(ids) == [0, 1, 2]


@pytest.mark.parametrize("mode", ["stream", "indexed"])
def test_index_disagreeing_with_shards(tmp_path, mode):
    write_tar(tmp_path / "a.tar", [good(i) for i in range(5)])
    index = index_for([tmp_path / "a.tar"], [7])
    with pytest.raises(ShardError, match=r"a\.tar: .*index says 7 samples, the shard holds 5|a\.tar: index says 7"):
        run(index, mode=mode)


def test_skip_mode_never_hangs_when_everything_is_bad(tmp_path):
    write_tar(tmp_path / "bad.tar", [(f"s{i}", {"npy": b"junk", "cls": b"1"}) for i in range(8)])
    ds, ids = run(str(tmp_path / "bad.tar"), on_error="skip", workers=2)
    assert ids == [] and ds.control.skip_counts()["sample"] >= 8


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="on_error"):
        CuratedStream(ShardIndex([], np.zeros(0)), on_error="ignore")
    with pytest.raises(ValueError, match="mode"):
        CuratedStream(ShardIndex([], np.zeros(0)), mode="random")
