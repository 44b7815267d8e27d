"""Build a folder beside its destination and swap it in whole: readers of the destination see
the old content or the new, never a mix, and a crash at any point leaves the old content.

``with staged_folder(dest) as tmp: ...write into tmp...`` creates ``.<name>.partial-XXXX``
next to ``dest`` (same file system, so the final rename is atomic), removes it if the block
raises, and on success replaces ``dest`` by it: an empty or missing ``dest`` with one
``rename``, an existing one with Linux's ``renameat2(RENAME_EXCHANGE)`` (one atomic step), or
where that is unavailable by two renames through ``.<name>.old-XXXX``, which
:func:`recover` puts back if a crash fell between them. Leftover ``.partial-*`` folders of
killed runs are removed by the next run's :func:`recover` — one writer per destination at a
time.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _siblings(dest: Path, kind: str) -> list[Path]:
    return sorted(dest.parent.glob(f".{dest.name}.{kind}-*"))


def recover(dest: Path) -> None:
    """Undo what a killed run left around ``dest``: put back an old copy if ``dest`` itself is
    gone (a crash between the two fallback renames), and remove half-built folders."""
    olds = _siblings(dest, "old")
    if not dest.exists() and olds:
        os.rename(olds[-1], dest)
        olds = olds[:-1]
    for leftover in [*olds, *_siblings(dest, "partial")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where the call is unavailable."""
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here: fall back
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


def publish(staged: Path, dest: Path) -> None:
    """Replace ``dest`` (missing, empty or not) by the folder ``staged``."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        os.replace(staged, dest)
        return
    if _exchange(staged, dest):
        shutil.rmtree(staged)  # now the old content
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rmdir(old)
    os.rename(dest, old)
    os.rename(staged, dest)
    shutil.rmtree(old)


@contextmanager
def staged_folder(dest: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder next to ``dest`` to build in; swapped in for ``dest`` when the block
    ends without an exception, removed when it raises (``dest`` is then untouched)."""
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover(dest)
    staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield staged
        publish(staged, dest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


__all__ = ["publish", "recover", "staged_folder"]
