"""A minimal, fast reader of tar headers (ustar, GNU long names, pax paths).

Python's ``tarfile`` spends ~100 µs per member building ``TarInfo`` objects; shards of many
small samples are header-bound, so this module parses the 512-byte headers directly and
either seeks over member data (seekable files) or reads past it (streams).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK = b"x", b"g", b"L", b"K"


class TarFormatError(ValueError):
    """The bytes are not a well-formed tar stream (bad header, truncated data)."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    offset: int  # byte offset of the member's data in the (uncompressed) stream


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for large values
        value = int.from_bytes(field, "big", signed=False)
        return value & ~(0x80 << (8 * (len(field) - 1)))
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError as exn:
        raise TarFormatError(f"bad number field {field!r} in tar header") from exn


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == unsigned


def _pax_path(data: bytes) -> str | None:
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        pos += length
    return None


class TarReader:
    """Iterate the regular members of a tar stream; read or skip each member's data.

    ``fileobj`` may be seekable (data is skipped with seeks) or a plain stream.
    Call :meth:`read` for the current member before advancing, or not at all.
    """

    def __init__(self, fileobj: io.BufferedIOBase, seekable: bool | None = None) -> None:
        self.f = fileobj
        self.seekable = fileobj.seekable() if seekable is None else seekable
        self.pos = 0  # position in the stream of the next unread byte
        self._pending = 0  # data bytes (with padding) of the current member not yet consumed
        self._current: Member | None = None

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise TarFormatError(f"truncated tar: {what} needs {n} bytes at offset {self.pos}, got {len(data)}")
        self.pos += n
        return data

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if self.seekable:
            self.f.seek(n, io.SEEK_CUR)
            self.pos += n
        else:
            while n > 0:
                chunk = self.f.read(min(n, 1 << 20))
                if not chunk:
                    raise TarFormatError(f"truncated tar: member data ends early at offset {self.pos}")
                n -= len(chunk)
                self.pos += len(chunk)

    def read(self) -> bytes:
        """The current member's data."""
        member = self._current
        if member is None or self._pending == 0:
            raise RuntimeError("no member data to read")
        padded = self._pending
        data = self._read_exact(member.size, f"member {member.name!r}")
        self._skip(padded - member.size)
        self._pending = 0
        return data

    def __iter__(self) -> Iterator[Member]:
        long_name: str | None = None
        while True:
            self._skip(self._pending)
            self._pending = 0
            header = self.f.read(BLOCK)
            if not header or header == b"\0" * len(header):
                return  # end of archive (zero block, or end of file)
            if len(header) != BLOCK:
                raise TarFormatError(f"truncated tar: partial header at offset {self.pos}")
            if not _checksum_ok(header):
                raise TarFormatError(f"bad tar header checksum at offset {self.pos}")
            self.pos += BLOCK
            size = _number(header[124:136])
            padded = (size + BLOCK - 1) // BLOCK * BLOCK
            kind = header[156:157]
            if kind in (_PAX, _GNU_LONGNAME):
                payload = self._read_exact(padded, "extended header")[:size]
                name = _pax_path(payload) if kind == _PAX else payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
                long_name = name or long_name
                continue
            if kind not in _REGULAR:
                self._pending = padded  # directories, links, global pax headers: skipped
                long_name = None
                continue
            if long_name is not None:
                name = long_name
            else:
                name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if header[257:262] == b"ustar":
                    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    if prefix:
                        name = f"{prefix}/{name}"
            long_name = None
            self._current = Member(name, size, self.pos)
            self._pending = padded
            yield self._current
