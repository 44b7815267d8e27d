"""Numbered tar shards written byte for byte as webdataset's ``ShardWriter`` writes them
(its ``TarWriter`` defaults: PAX tar stream, member mtime ``time.time()``, mode 0o444,
owner ``bigdata``), without building a ``tarfile.TarInfo`` per member.

Headers of ASCII names of at most 100 characters are assembled from a template (the common
case: a pax ``mtime`` record and a ustar block); any other member is encoded by ``tarfile``
itself, so the bytes never depend on which path wrote them.
"""

from __future__ import annotations

import tarfile
import time
from typing import Any, BinaryIO, Self

from webdataset.writer import make_encoder

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_NUL = b"\0"
_MAX_OCTAL_12 = 8**11  # largest size/mtime a 12-byte ustar field holds, plus one
_PAX_NAME = b"././@PaxHeader".ljust(100, _NUL)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pad(size: int) -> bytes:
    return _NUL * (-size % _BLOCK)


class _Headers:
    """Tar headers of regular files with one mode and owner, as ``tarfile`` makes them in
    PAX format (a float mtime gets a pax ``mtime`` record; the ustar field holds it rounded)."""

    def __init__(self, mode: int, user: str, group: str) -> None:
        self._mode, self._user, self._group = mode, user, group
        self._fast_owner = all(s.isascii() and len(s) <= 32 for s in (user, group))  # else tarfile's pax records
        self._ids = _octal(mode & 0o7777, 8) + _octal(0, 8) + _octal(0, 8)  # mode, uid, gid
        self._tail = self._tail_of(tarfile.REGTYPE, user, group) if self._fast_owner else b""
        self._pax_ids = _octal(0, 8) * 3
        self._pax_tail = self._tail_of(tarfile.XHDTYPE, "", "")
        self._pax_blocks: dict[int, bytes] = {}

    @staticmethod
    def _tail_of(kind: bytes, user: str, group: str) -> bytes:
        """Everything after the checksum field: type, link name, magic, owner, devices, prefix."""
        fields = kind + _NUL * 100 + tarfile.POSIX_MAGIC + user.encode("ascii").ljust(32, _NUL) + group.encode("ascii").ljust(32, _NUL)
        return (fields + _NUL * 8 * 2 + _NUL * 155).ljust(_BLOCK - 156, _NUL)

    @staticmethod
    def _block(head: bytes, tail: bytes) -> bytes:
        checksum = sum(head) + sum(tail) + 8 * ord(" ")  # the checksum field counts as spaces
        return head + b"%06o\0 " % checksum + tail

    def _pax_block(self, records_size: int) -> bytes:
        block = self._pax_blocks.get(records_size)
        if block is None:
            head = _PAX_NAME + self._pax_ids + _octal(records_size, 12) + _octal(0, 12)
            block = self._pax_blocks[records_size] = self._block(head, self._pax_tail)
        return block

    @staticmethod
    def _pax_record(keyword: str, value: str) -> bytes:
        body = f" {keyword}={value}\n".encode()
        length = len(body)
        while len(str(length)) + len(body) != length:  # the length counts its own digits
            length = len(str(length)) + len(body)
        return str(length).encode() + body

    def header(self, name: str, size: int, mtime: float) -> bytes:
        """The header block(s) of a regular file ``name`` of ``size`` bytes."""
        rounded = round(mtime) if isinstance(mtime, float) else mtime
        if not (self._fast_owner and name.isascii() and len(name) <= 100 and 0 <= size < _MAX_OCTAL_12 and 0 <= rounded < _MAX_OCTAL_12):
            return self._tarfile_header(name, size, mtime)
        head = name.encode("ascii").ljust(100, _NUL) + self._ids + _octal(size, 12) + _octal(rounded, 12)
        block = self._block(head, self._tail)
        if rounded is mtime:
            return block
        records = self._pax_record("mtime", str(mtime))
        return self._pax_block(len(records)) + records + _pad(len(records)) + block

    def _tarfile_header(self, name: str, size: int, mtime: float) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, mtime, self._mode, self._user, self._group
        return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


class ShardTarWriter:
    """Samples (dicts of ``ext -> value`` plus ``__key__``) → ``pattern % 0, pattern % 1, ...``,
    a new shard after ``maxcount`` samples or ``maxsize`` data bytes, each member encoded by
    webdataset's encoders. Same files as ``webdataset.ShardWriter(pattern, maxcount, maxsize)``.
    """

    def __init__(self, pattern: str, maxcount: int = 100000, maxsize: float = 3e9, *, mode: int = 0o444,
                 user: str = "bigdata", group: str = "bigdata") -> None:
        self.pattern = pattern
        self.maxcount = maxcount
        self.maxsize = maxsize
        self._headers = _Headers(mode, user, group)
        self._encode = make_encoder(True)
        self._file: BinaryIO | None = None
        self._offset = 0
        self.shard = 0
        self.count = 0
        self.size = 0
        self.fname: str | None = None
        self._next_shard()

    def _next_shard(self) -> None:
        self._finish()
        self.fname = self.pattern % self.shard
        self.shard += 1
        self._file = open(self.fname, "wb")  # noqa: SIM115 (closed by _finish)
        self._offset = self.count = self.size = 0

    def _finish(self) -> None:
        if self._file is None:
            return
        end = _NUL * (2 * _BLOCK)  # end-of-archive marker, then zeros up to a whole record
        self._file.write(end + _NUL * (-(self._offset + len(end)) % _RECORD))
        self._file.close()
        self._file = None

    def write(self, sample: dict[str, Any]) -> None:
        """Append one sample's members (sorted by extension) to the current shard."""
        if self.count >= self.maxcount or self.size >= self.maxsize:
            self._next_shard()
        obj = self._encode(sample)
        if "__key__" not in obj:
            raise ValueError("object must contain a __key__")
        for ext, value in obj.items():
            if ext[0] != "_" and not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"{ext} doesn't map to a bytes after encoding ({type(value)})")
        key = obj["__key__"]
        parts: list[bytes | bytearray | memoryview] = []
        data_bytes = 0
        for ext in sorted(obj):
            if ext[0] == "_":
                continue
            value = obj[ext]
            size = len(value) if not isinstance(value, memoryview) else value.nbytes
            parts += (self._headers.header(f"{key}.{ext}", size, time.time()), value, _pad(size))
            data_bytes += size
        chunk = b"".join(parts)
        self._file.write(chunk)
        self._offset += len(chunk)
        self.count += 1
        self.size += data_bytes

    def close(self) -> None:
        self._finish()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
