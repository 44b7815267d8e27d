"""Shards streamed from a real HTTP server on 127.0.0.1 (``python -m http.server``).

Same samples as the local files, an index built once from the streamed headers and then
cached, a killed or stalled server as a ShardError naming the URL (or counted skips), never
a hang, and indexed mode refused up front.
"""

from __future__ import annotations

import http.server
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from curated_loader.data.errors import ShardError
from curated_loader.data.pipeline import CuratedLoader, CuratedStream
from curated_loader.data.remote import HTTP_TIMEOUT_ENV
from curated_loader.data.sampler import ShardDataset
from curated_loader.data.shards import load_index
from curated_loader.data.tario import stream_samples
from curated_loader.data.writer import write_samples
from tests.conftest import id_samples

pytestmark = [pytest.mark.http, pytest.mark.timeout(180)]

SHARD_SIZES = [24] * 6


class ShardServer:
    """``python -m http.server`` serving ``folder`` on a free port of 127.0.0.1; its request
    log (stderr) tells how often each file was fetched."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 (open while the server runs)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=subprocess.PIPE, stderr=self._log_file, text=True,
        )
        line = self.proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 12345 (http://127.0.0.1:12345/) ..."
        match = re.search(r"port (\d+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"http.server did not start: {line!r}")
        self.base = f"http://127.0.0.1:{match.group(1)}"

    def urls(self, names: list[str]) -> list[str]:
        return [f"{self.base}/{name}" for name in names]

    def gets(self) -> Counter:
        """GET requests per path so far."""
        return Counter(re.findall(r'"GET /(\S+) HTTP', self.log.read_text()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped server could not die
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self._log_file.close()


@pytest.fixture
def shards(tmp_path: Path):
    return write_samples(id_samples(SHARD_SIZES), tmp_path / "shards", samples_per_shard=SHARD_SIZES[0], progress=False)


@pytest.fixture
def server(shards, tmp_path: Path) -> Iterator[ShardServer]:
    srv = ShardServer(Path(shards.urls[0]).parent, tmp_path / "server.log")
    yield srv
    srv.stop()


def _names(shards) -> list[str]:
    return [Path(u).name for u in shards.urls]


def _stream(spec, tmp_path: Path, **kw) -> CuratedStream:
    kw = {"fields": ("npy", "cls"), "decode": (), "batch_size": 4, "cache_dir": tmp_path / "cache", **kw}
    return CuratedStream(spec, **kw)


def _epoch(loader: CuratedLoader) -> list[tuple[list[int], list[int]]]:
    """(ids, first value of each npy array) of every batch, in delivery order."""
    return [(b[2].tolist(), b[0][:, 0].int().tolist()) for b in loader]


def test_http_stream_gives_the_local_samples_and_indexes_once(shards, server, tmp_path):
    urls = server.urls(_names(shards))
    local = CuratedLoader(_stream(list(shards.urls), tmp_path, shuffle_buffer=16), num_workers=2)
    remote_stream = _stream(urls, tmp_path, shuffle_buffer=16)
    assert remote_stream.index.urls == urls
    assert remote_stream.index.counts.tolist() == SHARD_SIZES
    assert server.gets() == Counter(_names(shards))  # the index: one streamed pass over each shard's headers

    remote = CuratedLoader(remote_stream, num_workers=2)
    expected = _epoch(local)
    got = _epoch(remote)
    assert got == expected  # same batches, same order, same bytes
    ids = sorted(i for batch_ids, _ in got for i in batch_ids)
    assert ids == list(range(sum(SHARD_SIZES)))
    assert all(ids_ == values for ids_, values in got)  # each sample's payload is its own id
    assert server.gets() == Counter({n: 2 for n in _names(shards)})  # the epoch read each shard once more

    again = CuratedLoader(_stream(urls, tmp_path, shuffle_buffer=16), num_workers=2)  # a new run: cached index
    assert list(Path(tmp_path / "cache").glob("index-*.json"))
    assert _epoch(again) == expected
    assert server.gets() == Counter({n: 3 for n in _names(shards)})  # no second pass for the index


def _kill_after_each_workers_first_batch(loader: CuratedLoader, server: ShardServer) -> list:
    """Read the epoch; kill the server once every worker delivered a batch (the DataLoader
    takes them in turn), so each worker had opened its first shard, even on a loaded machine."""
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == loader.num_workers:
            server.proc.kill()
            server.proc.wait(timeout=30)
    return batches


def test_server_killed_mid_epoch_is_a_shard_error_naming_the_url(shards, server, tmp_path):
    urls = server.urls(_names(shards))
    loader = CuratedLoader(_stream(urls, tmp_path, shuffle=False, shuffle_buffer=0), num_workers=2)
    with pytest.raises(ShardError, match=rf"{re.escape(server.base)}/train-\d+\.tar: cannot open \(.*refused") as caught:
        _kill_after_each_workers_first_batch(loader, server)
    assert caught.value.url in urls[2:]  # each worker had its first shard; a later one failed


def test_server_killed_mid_epoch_is_counted_under_skip(shards, server, tmp_path, caplog):
    urls = server.urls(_names(shards))
    loader = CuratedLoader(_stream(urls, tmp_path, shuffle=False, shuffle_buffer=0, on_error="skip"), num_workers=2)
    batches = _kill_after_each_workers_first_batch(loader, server)
    delivered = sum(len(b[2]) for b in batches)
    skipped = loader.skip_counts()
    assert skipped["shard"] > 0
    assert delivered + skipped["shard"] + skipped["missing"] >= sum(SHARD_SIZES[2:])  # nothing lost silently
    assert delivered < sum(SHARD_SIZES)


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Promises the whole file, sends its first ``cut`` bytes, then closes the connection
    (``stall`` unset) or goes quiet until the test ends (``stall`` set)."""

    body = b""
    cut = 0
    stall: threading.Event | None = None

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[: self.cut])
        self.wfile.flush()
        if self.stall is not None:
            self.stall.wait(60)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def partial_server(shards):
    servers = []

    def start(stall: bool) -> str:
        body = Path(shards.urls[0]).read_bytes()
        handler = type("Handler", (_StallingHandler,), {"body": body, "cut": len(body) // 2, "stall": threading.Event() if stall else None})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append((srv, handler))
        return f"http://127.0.0.1:{srv.server_address[1]}/{Path(shards.urls[0]).name}"

    yield start
    for srv, handler in servers:
        if handler.stall is not None:
            handler.stall.set()
        srv.shutdown()
        srv.server_close()


def test_connection_closed_mid_shard_names_the_url_and_the_bytes(partial_server, shards):
    url = partial_server(stall=False)
    size = Path(shards.urls[0]).stat().st_size
    with pytest.raises(ShardError, match=rf"{re.escape(url)}: the server closed the connection after {size // 2} of {size} bytes"):
        list(stream_samples(url, lambda pos: True))


def test_stalled_server_times_out_instead_of_hanging(partial_server, tmp_path, monkeypatch):
    url = partial_server(stall=True)
    monkeypatch.setenv(HTTP_TIMEOUT_ENV, "1")
    with pytest.raises(ShardError, match=rf"{re.escape(url)}: reading from the server failed after \d+ bytes \(the server sent nothing for 1 s"):
        load_index([url], cache_dir=tmp_path / "cache")


def test_stopped_server_times_out_in_loader_workers(shards, server, tmp_path, monkeypatch):
    urls = server.urls(_names(shards))
    stream = _stream(urls, tmp_path, shuffle=False, shuffle_buffer=0)  # index built while the server runs
    server.proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    monkeypatch.setenv(HTTP_TIMEOUT_ENV, "2")  # read by the workers, which start below
    with pytest.raises(ShardError, match=r"cannot open \(the server sent nothing for 2 s; raise CURATED_LOADER_HTTP_TIMEOUT"):
        list(CuratedLoader(stream, num_workers=2))


def test_random_access_over_http_is_refused_up_front(shards, server, tmp_path):
    urls = server.urls(_names(shards))
    with pytest.raises(ValueError, match=rf"random access .* {re.escape(urls[0])} is remote: stream it with mode='stream'"):
        _stream(urls, tmp_path, mode="indexed")
    with pytest.raises(ValueError, match=re.escape(urls[0])):
        ShardDataset(load_index(urls, cache_dir=tmp_path / "cache"), fields=("npy",), decode=())


def test_a_missing_file_on_the_server_names_the_url_and_status(shards, server, tmp_path):
    url = f"{server.base}/no-such-shard.tar"
    with pytest.raises(ShardError, match=rf"{re.escape(url)}: HTTP 404"):
        load_index([url], cache_dir=tmp_path / "cache")
