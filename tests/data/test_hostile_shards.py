"""Hostile or badly written shards: a ShardError naming the shard (raise) or a counted,
logged skip (skip) — never a hang, a bare ValueError/MemoryError, or a silent misread."""

from __future__ import annotations

import gzip
import logging
import shutil
import subprocess

import numpy as np
import pytest

from curated_loader.data.errors import ShardError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.shards import ShardIndex, build_index, load_index
from curated_loader.data.tario import scan_layout, stream_samples
from tests.data import tarcraft as tc

pytestmark = pytest.mark.timeout(180)
GB = 1 << 30


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def base256(value: int) -> bytes:
    return bytes([0x80]) + value.to_bytes(11, "big")


HOSTILE = {  # a shard whose third sample's headers are malformed (two good samples first)
    "pax-length-zero": tc.pax_member(b"0 mtime=1\n"),
    "pax-length-garbage": tc.pax_member(b"zz path=x\n"),
    "pax-length-past-end": tc.pax_member(b"99 path=x\n"),
    "pax-size-garbage": tc.pax_member(pax_record("size", "zz")),
    "pax-header-claims-100GB": tc.header("././@PaxHeader", 0, kind=b"x", size_field=base256(100 * GB)),
    "member-claims-100GB": tc.header("s0002.txt", 0, size_field=base256(100 * GB)),
    "pax-size-claims-100GB": tc.pax_member(pax_record("size", str(100 * GB))),
    "negative-base256-size": tc.header("s0002.txt", 0, size_field=b"\xff" * 12),
    "size-not-octal": tc.header("s0002.txt", 0, size_field=b"12389\0"),
}


def hostile_bytes(case: str) -> bytes:
    return tc.samples(2) + HOSTILE[case] + tc.member("s0002.txt", b"tail") + tc.member("s0002.cls", b"1") + tc.end()


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def run(spec, workers=2, **kw):
    ds = CuratedStream(spec, fields=("txt", "cls"), batch_size=2, decode=(), shuffle=False, **kw)
    ids = [int(i) for b in CuratedLoader(ds, num_workers=workers) for i in b[2]]
    return ds, ids


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_malformed_header_is_a_named_shard_error_or_skipped(tmp_path, case):
    good = write(tmp_path / "good.tar", tc.samples(6) + tc.end())
    bad = write(tmp_path / "bad.tar", hostile_bytes(case))
    with pytest.raises(ShardError, match=r"bad\.tar: ") as raised:  # index building (header scan)
        load_index([good, bad])
    assert "not a tar file or corrupt" in str(raised.value)
    with pytest.raises(ShardError, match=r"bad\.tar: "):  # a stream, where only the cap can bound sizes
        list(stream_samples(f"pipe:cat {bad}", lambda pos: True))
    # streaming from an index that promised 3 samples: raise names the shard, skip counts
    index = ShardIndex([good, bad], np.asarray([6, 3]))
    with pytest.raises(ShardError, match=r"bad\.tar"):
        run(index, workers=0)
    ds, ids = run(index, on_error="skip")
    missing = ds.control.skip_counts()["missing"]  # the bad sample, and the one read when it failed
    assert set(range(6)) <= set(ids) and len(set(ids)) + missing == 9 and missing == 2
    ds, ids = run([good, bad], on_error="skip")  # skip while indexing: the bad shard is left out
    assert sorted(ids) == list(range(6)) and [u for u, _ in ds.index.skipped] == [bad]


def test_gzip_bomb_member_is_refused_before_reading(tmp_path):
    zeros = 3 << 20
    bomb = tc.member("s0000.txt", b"\0" * zeros) + tc.member("s0000.cls", b"1") + tc.end()
    path = write(tmp_path / "bomb.tar.gz", gzip.compress(bomb))
    assert len(scan_layout(path).keys) == 1  # under the default cap it is an ordinary shard
    with pytest.raises(ShardError, match=r"bomb\.tar\.gz: .*'s0000\.txt' claims 3145728 bytes.*max_member_bytes"):
        run(path, max_member_bytes=1 << 20)
    ds, ids = run([path, write(tmp_path / "good.tar", tc.samples(3) + tc.end())], on_error="skip", max_member_bytes=1 << 20)
    assert sorted(ids) == [0, 1, 2] and len(ds.index.skipped) == 1
    claims = tc.header("s0000.txt", 2 * GB) + b"\0" * 4096  # a 2 GiB claim, refused from the header alone
    path = write(tmp_path / "claim.tar.gz", gzip.compress(claims))
    with pytest.raises(ShardError, match=r"claim\.tar\.gz: .*claims 2147483648 bytes.*over the limit of 1073741824"):
        scan_layout(path)


def test_member_beyond_the_end_of_a_local_file(tmp_path):
    data = tc.samples(3) + tc.end()
    path = write(tmp_path / "short.tar", data[: 3 * tc.BLOCK])  # second member: header, no data
    with pytest.raises(ShardError, match=r"short\.tar: .*claims \d+ bytes at offset \d+, the file has \d+ left"):
        scan_layout(path)


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
def test_non_adjacent_members_from_the_tar_command(tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    for key in ("a", "b", "c"):
        (src / f"{key}.txt").write_text(f"text of {key}")
        (src / f"{key}.cls").write_text("1")
    order = ["a.txt", "b.txt", "c.txt", "a.cls", "b.cls", "c.cls"]
    subprocess.run(["tar", "cf", str(tmp_path / "mixed.tar"), "-C", str(src), *order], check=True, timeout=60)
    subprocess.run(["tar", "cf", str(tmp_path / "sorted.tar"), "-C", str(src), *sorted(order)], check=True, timeout=60)
    mixed, ordered = str(tmp_path / "mixed.tar"), str(tmp_path / "sorted.tar")
    with pytest.raises(ShardError, match=r"mixed\.tar \(sample 'a'\): members of sample 'a' are not adjacent"):
        load_index(mixed)
    with pytest.raises(ShardError, match="not adjacent"):
        list(stream_samples(mixed, lambda pos: True))
    with caplog.at_level(logging.WARNING, logger="curated_loader"):
        ds, ids = run([mixed, ordered], on_error="skip")
    assert sorted(ids) == [0, 1, 2] and ds.index.urls == [ordered]
    assert any("skipping shard" in r.message and "mixed.tar" in r.message for r in caplog.records)


def test_zero_byte_shards_warn_and_an_empty_split_is_an_error(tmp_path, caplog):
    good = write(tmp_path / "good.tar", tc.samples(4) + tc.end())
    empty = write(tmp_path / "empty.tar", b"")
    with caplog.at_level(logging.WARNING, logger="curated_loader"):
        ds, ids = run([good, empty])
    assert sorted(ids) == [0, 1, 2, 3]
    assert any("empty.tar holds no samples (zero-byte file)" in r.message for r in caplog.records)
    write(tmp_path / "empty2.tar", b"")
    with pytest.raises(ShardError, match=r"empty\{,2\}\.tar: no samples in any shard \(2 shards"):
        CuratedStream(str(tmp_path / "empty{,2}.tar"))


def test_unreadable_shards_are_skipped_and_counted_while_indexing(tmp_path, caplog):
    good = write(tmp_path / "good.tar", tc.samples(5) + tc.end())
    junk = write(tmp_path / "junk.tar", b"this is not a tar archive at all\n" * 40)
    whole = tc.samples(4) + tc.end()
    cut = write(tmp_path / "cut.tar", whole[: len(whole) // 2 + 7])
    with pytest.raises(ShardError, match=r"junk\.tar: not a tar file"):
        build_index([good, junk, cut], progress=False)
    with caplog.at_level(logging.WARNING, logger="curated_loader"):
        index = build_index([good, junk, cut], progress=False, on_error="skip")
    assert index.urls == [good] and index.num_samples == 5
    assert [u for u, _ in index.skipped] == [junk, cut] and "truncated" in index.skipped[1][1]
    assert any("skipped 2 of 3 shards" in r.message for r in caplog.records)
    ds, ids = run([good, junk, cut], on_error="skip")
    assert sorted(ids) == list(range(5)) and len(ds.index.skipped) == 2
    assert ds.skip_counts()["unreadable_shards"] == 2  # reaches the curation/skipped_* metrics


def test_empty_members_are_read_as_empty_bytes(tmp_path):
    path = write(tmp_path / "e.tar", tc.member("s0.txt", b"") + tc.member("s0.cls", b"2") + tc.samples(1, start=1) + tc.end())
    samples = list(stream_samples(path, lambda pos: True))
    assert [(s["__key__"], s["txt"], s["cls"]) for s in samples] == [("s0", b"", b"2"), ("s0001", b"text 1", b"1")]
    assert scan_layout(path).sizes.tolist() == [0, 1, 6, 1]
