"""A minimal, fast reader of tar headers (ustar, GNU long names and base-256 sizes, pax).

Python's ``tarfile`` spends ~100 µs per member building ``TarInfo`` objects; shards of many
small samples are header-bound, so this module parses the 512-byte headers directly and
either seeks over member data (seekable files) or reads past it (streams).

Headers are untrusted: every malformed one raises :class:`TarFormatError`, every loop over
header bytes advances, and a size is checked before anything of that size is allocated or
skipped — against the bytes left in the file when its length is known, else against
``max_member_bytes`` (extended headers against :data:`MAX_EXTENDED_HEADER_BYTES`).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 512
DEFAULT_MAX_MEMBER_BYTES = 1 << 30  # cap on one member's size in streams and compressed shards
MAX_EXTENDED_HEADER_BYTES = 1 << 20  # cap on one pax / GNU long-name header
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # hard/symbolic links, devices, directories, fifos
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK = b"x", b"g", b"L", b"K"


class TarFormatError(ValueError):
    """The bytes are not a well-formed tar stream (bad header, truncated data)."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    offset: int  # byte offset of the member's data in the (uncompressed) stream


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (high bit set) for large values."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise TarFormatError(f"negative base-256 number {field!r} in tar header")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if text.translate(None, b"01234567"):  # int() would also take "+", "_", "-" and spaces
        raise TarFormatError(f"bad number field {field!r} in tar header")
    return int(text, 8)


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    blank = 8 * 32
    if stored == sum(header[:148]) + blank + sum(header[156:]):
        return True
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:])  # old tars
    return stored == signed + blank


def pax_records(data: bytes) -> dict[bytes, bytes]:
    """The ``key=value`` records of a pax extended header (``"<len> <key>=<value>\\n"`` each).

    Raises TarFormatError for a record whose length is not a positive decimal number
    covering the record, or that does not end in a newline.
    """
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # NUL padding after the last record
            break
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise TarFormatError(f"bad pax record at byte {pos}: length {data[pos:pos + 20]!r} is not a number")
        end = pos + int(digits)
        if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise TarFormatError(f"bad pax record at byte {pos}: length {int(digits)} does not fit the header")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise TarFormatError(f"bad pax record at byte {pos}: no key=value")
        records[key] = value
        pos = end  # end > space >= pos: always advances
    return records


def _pax_size(records: dict[bytes, bytes]) -> int | None:
    value = records.get(b"size")
    if value is None:
        return None
    if not value.isdigit():
        raise TarFormatError(f"bad pax size {value!r}")
    return int(value)


class TarReader:
    """Iterate the regular members of a tar stream; read or skip each member's data.

    ``fileobj`` may be seekable (data is skipped with seeks) or a plain stream.
    ``total_size`` is the stream's length where known (a local uncompressed file): member
    sizes are then checked against it; otherwise against ``max_member_bytes``.
    Call :meth:`read` for the current member before advancing, or not at all.
    """

    def __init__(
        self,
        fileobj: io.BufferedIOBase,
        seekable: bool | None = None,
        *,
        total_size: int | None = None,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ) -> None:
        self.f = fileobj
        self.seekable = fileobj.seekable() if seekable is None else seekable
        self.total_size = total_size
        self.max_member_bytes = int(max_member_bytes)
        # a local file bounds its members itself; streams and compressed shards get the cap
        self._member_cap = self.max_member_bytes if total_size is None else sys.maxsize
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

    def _check_size(self, size: int, what: str, cap: int | None, cap_name: str = "MAX_EXTENDED_HEADER_BYTES") -> None:
        """Refuse a size before allocating or skipping it: over what the file has left, or over ``cap``."""
        if self.total_size is not None and size > self.total_size - self.pos:
            left = max(self.total_size - self.pos, 0)
            raise TarFormatError(f"truncated tar: {what} claims {size} bytes at offset {self.pos}, the file has {left} left")
        if cap is not None and size > cap:
            raise TarFormatError(f"{what} claims {size} bytes at offset {self.pos}, over the limit of {cap} bytes ({cap_name})")

    def read(self) -> bytes:
        """The current member's data."""
        member, self._current = self._current, None
        if member is None:
            raise RuntimeError("no member data to read")
        padded = self._pending
        data = self._read_exact(member.size, f"member {member.name!r}")
        self._skip(padded - member.size)
        self._pending = 0
        return data

    def _extended(self, size: int, what: str) -> bytes:
        self._check_size(size, what, MAX_EXTENDED_HEADER_BYTES)
        return self._read_exact(_padded(size), what)[:size]

    def __iter__(self) -> Iterator[Member]:
        long_name: str | None = None
        pax_size: int | None = None
        while True:
            self._skip(self._pending)
            self._pending, self._current = 0, None
            header = self.f.read(BLOCK)
            if not header:
                if self.pos == 0:
                    return  # an empty (zero-byte) file holds no members
                raise TarFormatError(f"truncated tar: the file ends at offset {self.pos} without the end-of-archive blocks")
            if len(header) != BLOCK:
                if not header.strip(b"\0"):
                    return  # end of archive, its zero blocks cut short
                raise TarFormatError(f"truncated tar: partial header at offset {self.pos}")
            if header == _ZERO_BLOCK:
                return  # end of archive
            if not _checksum_ok(header):
                raise TarFormatError(f"bad tar header checksum at offset {self.pos}")
            self.pos += BLOCK
            size = _number(header[124:136])
            kind = header[156:157]
            if kind == _PAX:
                records = pax_records(self._extended(size, "pax header"))
                path = records.get(b"path")
                long_name = path.decode("utf-8", "surrogateescape") if path else long_name
                pax_size = _pax_size(records)
                continue
            if kind == _GNU_LONGNAME:
                long_name = self._extended(size, "GNU long name").split(b"\0", 1)[0].decode("utf-8", "surrogateescape") or long_name
                continue
            if kind in (_GNU_LONGLINK, _PAX_GLOBAL):
                self._extended(size, "GNU long link" if kind == _GNU_LONGLINK else "pax global header")
                continue  # link targets and global defaults do not name the next member
            if pax_size is not None:
                size = pax_size
            if long_name is not None:
                name = long_name
            else:
                name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if header[257:262] == b"ustar":
                    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    if prefix:
                        name = f"{prefix}/{name}"
            long_name, pax_size = None, None
            if kind in _NO_DATA:
                continue  # as tarfile: links, devices, directories, fifos carry no data
            if size > self._member_cap or (self.total_size is not None and size > self.total_size - self.pos):
                self._check_size(size, f"member {name!r}", self._member_cap, "max_member_bytes")
            self._pending = _padded(size)
            if kind not in _REGULAR:
                continue  # other (e.g. sparse, volume) members: data skipped
            self._current = Member(name, size, self.pos)
            yield self._current


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK
