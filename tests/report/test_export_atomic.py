"""Export is atomic and stays inside --out: a failed or killed export leaves the previous one
whole, errors are one line, unsafe member names and prefixes are refused."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from curated_loader.cli import main
from curated_loader.data.shards import load_index
from curated_loader.reporting.export import ExportError, export_curated

REPO = Path(__file__).resolve().parents[2]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _one_error_line(err: str, command: str = "export") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"curated-loader {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _export_args(run, out: Path, *extra: str) -> list[str]:
    return ["export", str(run.checkpoint), "--shards", str(run.train_index), "--out", str(out), "-q", *extra]


def test_disk_full_keeps_the_previous_export(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "clean"
    assert main(_export_args(trained_run, out)) == 0
    before = _digest(out)
    capsys.readouterr()

    real_addfile = tarfile.TarFile.addfile
    calls = []

    def addfile_until_full(self, tarinfo, fileobj=None):
        calls.append(tarinfo.name)
        if len(calls) > 500:  # a few shards' worth in, the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        return real_addfile(self, tarinfo, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile_until_full)
    assert main(_export_args(trained_run, out, "--overwrite", "--drop", "pruned")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and f"{out} is unchanged" in line
    assert len(calls) == 501
    assert _digest(out) == before  # the earlier export, whole
    assert load_index(str(out / "train-index.json")).num_samples == trained_run.num_train - len(trained_run.flagged)
    assert _leftovers(out) == []  # the half-built folder is gone


def _mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                              capture_output=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("options,reason", [("size=256k", "No space left on device"), ("ro,size=256k", "Read-only file system")])
def test_real_full_or_read_only_file_system(trained_run, tmp_path, options, reason, capsys):
    """A real 256 KiB tmpfs (the export needs ~3 MB) and a read-only one."""
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, options):
        pytest.skip("mounting a tmpfs is not permitted here (needs root); the patched-writer test covers disk full")
    try:
        out = mnt / "clean"
        assert main(_export_args(trained_run, out)) == 2
        assert reason in _one_error_line(capsys.readouterr().err)
        assert not out.exists() and sorted(os.listdir(mnt)) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)


_KILLABLE = """
import sys, time
from pathlib import Path
from curated_loader.reporting import export

real_new_shard = export._ShardSink.new_shard
def new_shard_then_stall(self):
    real_new_shard(self)
    if len(self.urls) == 3:  # two new shards written, the third begun: stall until killed
        Path(sys.argv[1]).write_text("stalled")
        time.sleep(600)
export._ShardSink.new_shard = new_shard_then_stall

from curated_loader.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.timeout(300)
def test_sigkill_during_overwrite_keeps_the_previous_export(trained_run, tmp_path):
    out = tmp_path / "clean"
    first = export_curated(trained_run.checkpoint, str(trained_run.train_index), out, progress=False)
    before = _digest(out)
    marker = tmp_path / "stalled"
    script = tmp_path / "killable_export.py"
    script.write_text(_KILLABLE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *_export_args(trained_run, out, "--overwrite", "--drop", "pruned")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the export never reached its third shard"
            time.sleep(0.1)
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(".clean.partial-")]
        assert len(staged) == 1 and len(list(staged[0].glob("train-*.tar"))) == 3  # mid-way, in the side folder
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _digest(out) == before  # every shard, the index and the manifest of the earlier export
    assert load_index(str(out / "train-index.json")).num_samples == first.num_kept

    # the next export clears the leftover and completes
    again = export_curated(trained_run.checkpoint, str(trained_run.train_index), out, drop="pruned",
                           overwrite=True, progress=False)
    assert _leftovers(out) == []
    assert load_index(str(again.index_path)).num_samples == again.num_kept < first.num_kept


def _hostile_shard(path: Path, bad_name: str) -> None:
    """Three samples; the middle one's members are named ``bad_name`` + suffix."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for i, key in enumerate(["s0000", bad_name, "s0002"]):
            for suffix, data in (("npy", _npy(i)), ("cls", str(i).encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def _npy(i: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.full(4, i, np.float32))
    return buf.getvalue()


@pytest.mark.parametrize("bad_name,problem", [
    ("../../escape", "contains a '..' component"),
    ("/etc/absolute", "is absolute"),
    ("dir\\windows", "contains a backslash"),
])
def test_unsafe_member_names_are_refused(tmp_path, make_checkpoint, capsys, bad_name, problem):
    shard = tmp_path / "src" / "hostile-000000.tar"
    shard.parent.mkdir()
    _hostile_shard(shard, bad_name)
    ckpt = make_checkpoint(tmp_path / "run.ckpt", np.arange(3), np.zeros(3, np.int8), shards=str(shard))
    out = tmp_path / "clean"
    with pytest.raises(ExportError, match=rf"hostile-000000\.tar \(sample '{_re(bad_name)}'\): member name .* {problem}"):
        export_curated(ckpt, str(shard), out, progress=False)
    assert not out.exists() and _leftovers(out) == []
    assert main(["export", str(ckpt), "--shards", str(shard), "--out", str(out), "-q"]) == 2
    assert problem in _one_error_line(capsys.readouterr().err)

    # flagged (so not exported), the sample is only named in the manifest
    reason = np.array([0, 3, 0], np.int8)
    ckpt = make_checkpoint(tmp_path / "flagged.ckpt", np.arange(3), reason, shards=str(shard))
    result = export_curated(ckpt, str(shard), out, progress=False)
    assert result.num_kept == 2 and result.num_removed == 1
    with tarfile.open(result.shards[0]) as tf:
        assert tf.getnames() == ["s0000.npy", "s0000.cls", "s0002.npy", "s0002.cls"]


def _re(text: str) -> str:
    import re

    return re.escape(text).replace("\\\\", "\\\\\\\\")


@pytest.mark.parametrize("prefix", ["../../x", "sub/x", "..", "a\\b", ""])
def test_prefix_cannot_leave_out(trained_run, tmp_path, capsys, prefix):
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "deep" / "clean"
    assert main(_export_args(trained_run, out, "--prefix", prefix)) == 2
    assert "is not a plain file name" in _one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written anywhere


def test_out_with_other_content_is_refused(trained_run, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "mine.txt").write_text("not an export")
    with pytest.raises(ExportError, match="not empty and holds no earlier export"):
        export_curated(trained_run.checkpoint, str(trained_run.train_index), out, overwrite=True, progress=False)
    assert sorted(os.listdir(out)) == ["mine.txt"]


def test_other_subcommands_report_one_line(tmp_path, capsys):
    assert main(["index", str(tmp_path / "missing-000000.tar"), "-o", str(tmp_path / "i.json"), "-q"]) == 2
    assert "missing-000000.tar" in _one_error_line(capsys.readouterr().err, "index")
    assert main(["write", "--npz", str(tmp_path / "none.npz"), "--out", str(tmp_path / "w")]) == 2
    assert "none.npz" in _one_error_line(capsys.readouterr().err, "write")
