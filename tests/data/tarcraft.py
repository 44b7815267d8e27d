"""Hand-made tar bytes for hostile-input tests: headers with any field, pax records as given."""

from __future__ import annotations

import io
import tarfile

BLOCK = 512


def fix_checksum(header: bytearray) -> bytearray:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return header


def header(name: str, size: int, kind: bytes = b"0", size_field: bytes | None = None) -> bytes:
    """One ustar header block; ``size_field`` overrides the 12 size bytes (checksum kept valid)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type = min(size, 0o77777777777), 0, kind
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    if size_field is not None:
        block[124:136] = size_field.ljust(12, b"\0")[:12]
    return bytes(fix_checksum(block))


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def member(name: str, data: bytes) -> bytes:
    return header(name, len(data)) + padded(data)


def pax_member(payload: bytes, claimed: int | None = None) -> bytes:
    """A pax extended header (type ``x``) whose payload is ``payload`` verbatim."""
    size = len(payload) if claimed is None else claimed
    return header("././@PaxHeader", size, kind=b"x") + padded(payload)


def end() -> bytes:
    return b"\0" * (2 * BLOCK)


def samples(n: int, start: int = 0) -> bytes:
    """``n`` well-formed samples ``s<i>.txt`` / ``s<i>.cls``."""
    return b"".join(member(f"s{i:04d}.txt", f"text {i}".encode()) + member(f"s{i:04d}.cls", str(i % 3).encode())
                    for i in range(start, start + n))


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()
