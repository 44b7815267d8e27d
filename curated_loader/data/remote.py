"""Opening remote shards: HTTP(S) read here, other schemes by webdataset's gopen or fsspec.

HTTP(S) shards are read with the standard library, not with webdataset's ``gopen`` (which
runs ``curl`` with 30 retries 2 s apart and no read timeout): no external program is
needed, a server that stops sending fails after :func:`http_timeout` seconds instead of
hanging, and a connection that ends before the promised ``Content-Length`` is an error
naming the URL rather than a tar that merely looks truncated.

``pipe:`` and the schemes webdataset knows (``gs:`` via gsutil, ``ais:``, ``hf:``, ...) go
to ``gopen``; any other scheme (``s3://``, ``gcs://``, ``az://``, ``memory://``, ...) to
`fsspec <https://filesystem-spec.readthedocs.io>`_ when it knows the protocol and its
backend (``s3fs``, ``gcsfs``, ...) is installed.

Random access (``mode="indexed"``) needs local files: :func:`require_local` says so up
front, naming the first remote URL.
"""

from __future__ import annotations

import http.client
import io
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from webdataset.gopen import gopen, gopen_schemes

from .errors import ShardError

HTTP_TIMEOUT_ENV = "CURATED_LOADER_HTTP_TIMEOUT"
DEFAULT_HTTP_TIMEOUT = 60.0  # seconds without a byte from the server before a read fails


def http_timeout() -> float:
    """Seconds an HTTP(S) connect or read may wait for the server: ``$CURATED_LOADER_HTTP_TIMEOUT``,
    else :data:`DEFAULT_HTTP_TIMEOUT`. Read in each loader worker when it opens a shard."""
    text = os.environ.get(HTTP_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_HTTP_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{HTTP_TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{HTTP_TIMEOUT_ENV} must be > 0 seconds, got {text!r}")
    return value


def is_http(url: str) -> bool:
    return urlparse(url).scheme.lower() in ("http", "https")


class HTTPStream(io.RawIOBase):
    """The body of one HTTP(S) GET as a read-only stream.

    Every connect and read waits at most ``timeout`` seconds; a timeout, a reset connection
    or a body shorter than its ``Content-Length`` raises a :class:`ShardError` naming the URL
    and how many bytes had arrived.
    """

    def __init__(self, url: str, timeout: float | None = None) -> None:
        self.url = url
        self.timeout = http_timeout() if timeout is None else float(timeout)
        self.received = 0
        self._response: http.client.HTTPResponse | None = None
        request = urllib.request.Request(url, headers={"User-Agent": "curated-loader", "Accept-Encoding": "identity"})
        try:
            self._response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exn:
            raise ShardError(url, f"HTTP {exn.code} {exn.reason}") from exn
        except (OSError, http.client.HTTPException) as exn:
            raise ShardError(url, f"cannot open ({self._why(exn)})") from exn
        self.length: int | None = self._response.length  # Content-Length, None when chunked

    def _why(self, exn: BaseException) -> str:
        reason = getattr(exn, "reason", None) or exn
        if isinstance(reason, TimeoutError):
            return f"the server sent nothing for {self.timeout:g} s; raise {HTTP_TIMEOUT_ENV} for a slow server"
        return str(reason) or type(reason).__name__

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._response is None:
            raise ValueError("read from a closed HTTPStream")
        try:
            data = self._response.read(None if n is None or n < 0 else n)
        except (OSError, http.client.HTTPException) as exn:
            raise ShardError(self.url, f"reading from the server failed after {self.received} bytes ({self._why(exn)})") from exn
        self.received += len(data)
        if self.length is not None and self.received < self.length and (not data or (n is not None and 0 <= n and len(data) < n)):
            raise ShardError(self.url, f"the server closed the connection after {self.received} of {self.length} bytes")
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._response is not None:
            self._response.close()
        super().close()


def open_remote(url: str) -> Any:
    """A readable binary stream of a shard that is not a local file (see the module notes)."""
    if is_http(url):
        return HTTPStream(url)
    scheme = urlparse(url).scheme.lower()
    if scheme in gopen_schemes:  # pipe: (as gopen parses it) and webdataset's own schemes
        return gopen(url, "rb")
    return _open_fsspec(url, scheme)


def _open_fsspec(url: str, scheme: str) -> Any:
    try:
        import fsspec
    except ImportError as exn:
        raise ShardError(url, f"no reader for {scheme}:// URLs: install fsspec and its {scheme} backend") from exn
    try:
        fsspec.get_filesystem_class(scheme)
    except ValueError as exn:
        raise ShardError(url, f"unknown URL scheme {scheme!r} (neither webdataset's gopen nor fsspec knows it)") from exn
    except ImportError as exn:
        raise ShardError(url, f"fsspec needs a backend for {scheme}:// URLs ({exn})") from exn
    try:
        return fsspec.open(url, "rb").open()
    except OSError as exn:
        raise ShardError(url, f"cannot open shard ({exn})") from exn


def require_local(urls: Sequence[str]) -> None:
    """Raise a ValueError naming the first of ``urls`` that is not a local file: random access
    by byte offset (``mode="indexed"``, ``ShardDataset``) reads local shards only."""
    from .tario import local_path  # tario opens remote shards through this module

    for url in urls:
        if local_path(url) is None:
            raise ValueError(
                f"random access (mode='indexed', ShardDataset) reads members by byte offset from local shard files; "
                f"{url} is remote: stream it with mode='stream', or copy the shards to a local disk"
            )


__all__ = ["DEFAULT_HTTP_TIMEOUT", "HTTP_TIMEOUT_ENV", "HTTPStream", "http_timeout", "is_http", "open_remote", "require_local"]
