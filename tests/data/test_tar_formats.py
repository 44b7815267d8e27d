"""Every header form the reader handles, read from fixtures shipped in tests/fixtures/."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.tario import scan_layout, stream_samples
from tests.fixtures import make_fixtures

FIXTURES = Path(make_fixtures.__file__).resolve().parent
pytestmark = pytest.mark.timeout(180)


def test_fixtures_are_what_their_generator_writes():
    result = subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_each_fixture_uses_the_header_form_it_covers():
    raw = {name: (FIXTURES / name).read_bytes() for name in make_fixtures.FOLDERS}
    headers = {name: [data[i : i + 512] for i in range(0, len(data) - 512, 512)] for name, data in raw.items()}
    assert any(h[156:157] == b"x" and b" path=" in raw["pax.tar"] for h in headers["pax.tar"])
    assert any(h.startswith(b"././@LongLink") and h[156:157] == b"L" for h in headers["gnu_longname.tar"])
    assert any(h[124] == 0x80 for h in headers["base256.tar"])
    assert any(h[257:262] == b"ustar" and h[345] != 0 for h in headers["ustar_prefix.tar"])
    assert raw["shard.tar.gz"][:2] == b"\x1f\x8b"


@pytest.mark.parametrize("fixture", sorted(make_fixtures.FOLDERS))
def test_reader_agrees_with_tarfile_and_the_generator(fixture):
    path = str(FIXTURES / fixture)
    with tarfile.open(path) as tf:  # an independent reader of the same bytes
        members = [(m.name, m.size) for m in tf.getmembers() if m.isfile()]
    layout = scan_layout(path)
    expected = make_fixtures.expected(fixture)
    assert layout.keys == [key for key, _, _ in expected]
    assert [f"{layout.keys[i]}.{s}" for i in range(layout.nsamples) for s, _, _ in layout.members(i)] == [n for n, _ in members]
    assert layout.sizes.tolist() == [size for _, size in members]
    assert layout.compressed == fixture.endswith(".gz")
    samples = list(stream_samples(path, lambda pos: True))
    assert [(s["__key__"], s["txt"], s["cls"]) for s in samples] == expected


def test_fixtures_stream_through_workers():
    shards = [str(FIXTURES / name) for name in sorted(make_fixtures.FOLDERS)]
    ds = CuratedStream(shards, fields=("txt", "cls"), batch_size=3, decode=(), shuffle=False, collate=list)
    batches = list(CuratedLoader(ds, num_workers=2))
    got = {int(i): (t, c) for b in batches for t, c, i in zip(b[0], b[1], b[2].tolist())}  # .txt, .cls decoded
    want = [(txt.decode(), int(cls)) for name in sorted(make_fixtures.FOLDERS) for _, txt, cls in make_fixtures.expected(name)]
    assert [got[i] for i in range(len(want))] == want and len(got) == len(want)


def test_indexed_mode_reads_uncompressed_fixtures_by_offset():
    shards = [str(FIXTURES / name) for name in sorted(make_fixtures.FOLDERS) if name.endswith(".tar")]
    ds = CuratedStream(shards, fields=("txt", "cls"), batch_size=4, decode=(), mode="indexed", collate=list)
    got = {int(i): t for b in CuratedLoader(ds, num_workers=2) for t, i in zip(b[0], b[2].tolist())}
    want = [txt.decode() for name in sorted(make_fixtures.FOLDERS) if name.endswith(".tar") for _, txt, _ in make_fixtures.expected(name)]
    assert [got[i] for i in range(len(want))] == want
