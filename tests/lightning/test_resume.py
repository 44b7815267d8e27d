"""Resume is exact: from an epoch-end checkpoint, mid-epoch after an odd number of batches,
and from a step checkpoint on an epoch's last batch, with 0 and 2 loader workers, in stream
and indexed mode, the resumed run reads the same batches in the same order and makes the
same decisions as the uninterrupted run. Also after a SIGKILL, from ``last.ckpt``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curated_loader.datasets import write_noisy_mnist1d

from .resume_run import DECISION_FIELDS, EPOCHS, train

RESUME_EPOCH = 2  # two decisions (filter + pruning) are in force by then
SCRIPT = Path(__file__).with_name("resume_run.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_mnist1d(tmp_path_factory):
    """640 noisy MNIST-1D training samples in 16 shards of 40."""
    return write_noisy_mnist1d(tmp_path_factory.mktemp("mnist1d_small"), num_samples=800, noise_rate=0.4, samples_per_shard=40, progress=False).train_index


@pytest.fixture(scope="module")
def uninterrupted(small_mnist1d, tmp_path_factory):
    """The uninterrupted run (and its checkpoints) per (workers, mode), made on first use."""
    runs = {}

    def get(workers: int, mode: str):
        if (workers, mode) not in runs:
            ckpts = tmp_path_factory.mktemp(f"full_{workers}_{mode}")
            runs[workers, mode] = train(small_mnist1d, ckpts, workers=workers, mode=mode).state(), ckpts
        return runs[workers, mode]

    return get


def steps_before(record: dict, epoch: int) -> int:
    return sum(len(record["batches"][e]) for e in range(epoch))


def assert_same_from(full: dict, resumed: dict, epoch: int, done: int) -> None:
    """From batch ``done`` of ``epoch`` on, the resumed run read and decided what the
    uninterrupted one did: per-epoch multiset, batch order, snapshots and decisions."""
    assert (~full["snapshots"][epoch]["keep"]).any(), "curation was not acting; the comparison would prove little"
    for e in range(epoch, EPOCHS):
        expected = full["batches"][e][done if e == epoch else 0 :]
        got = resumed["batches"][e]
        assert sorted(sum(got, [])) == sorted(sum(expected, [])), f"epoch {e}: other samples"
        assert got == expected, f"epoch {e}: same samples, other order"
        for name, array in full["snapshots"][e].items():
            np.testing.assert_array_equal(resumed["snapshots"][e][name], array, err_msg=f"epoch {e} read with another {name}")
        for name in DECISION_FIELDS:
            np.testing.assert_array_equal(resumed["decisions"][e][name], full["decisions"][e][name], err_msg=f"decision after epoch {e}: {name}")
    before = sum(full["batches"][epoch][:done], [])
    assert sorted(before + sum(resumed["batches"][epoch], [])) == sorted(sum(full["batches"][epoch], []))


def resume_point(full: dict, ckpts: Path, where: str) -> tuple[Path, int, int]:
    """(checkpoint, epoch it resumes in, batches of that epoch already done)."""
    start = steps_before(full, RESUME_EPOCH)
    if where == "epoch_end":
        return ckpts / f"epoch-{RESUME_EPOCH - 1}.ckpt", RESUME_EPOCH, 0
    if where == "last_batch":  # a step checkpoint written after the epoch's last batch, before its end
        return ckpts / f"step-{start}.ckpt", RESUME_EPOCH, 0
    done = 3  # odd: with 2 workers the next batch comes from worker 1
    assert len(full["batches"][RESUME_EPOCH]) > done + 2
    return ckpts / f"step-{start + done}.ckpt", RESUME_EPOCH, done


@pytest.mark.timeout(600)
@pytest.mark.parametrize("where", ["epoch_end", "mid_epoch_odd", "last_batch"])
@pytest.mark.parametrize("mode", ["stream", "indexed"])
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact(small_mnist1d, uninterrupted, tmp_path, workers, mode, where):
    full, ckpts = uninterrupted(workers, mode)
    ckpt, epoch, done = resume_point(full, ckpts, where)
    resumed = train(small_mnist1d, tmp_path, workers=workers, mode=mode, ckpt_path=ckpt).state()
    assert min(resumed["batches"]) == epoch
    assert_same_from(full, resumed, epoch, done)


def run_script(shards: str, out: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), shards, str(out), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = proc.communicate(timeout=280)
        assert proc.returncode == 0, output[-3000:]
    return proc


@pytest.mark.timeout(600)
def test_sigkill_mid_epoch_then_resume_from_last_ckpt(small_mnist1d, uninterrupted, tmp_path):
    """A training process killed mid-epoch resumes from its last.ckpt (written every 4 steps)
    and goes on exactly as a run that was never killed (the script runs the same training)."""
    full, _ = uninterrupted(2, "stream")
    start = steps_before(full, RESUME_EPOCH)
    saved = start + 4 - start % 4 if start % 4 else start + 4  # the first last.ckpt inside the epoch
    saved += 4 if saved - start < 3 else 0  # ... a few batches in, so that workers are mid-share
    kill_at = saved + 2  # two more batches run after the checkpoint, then the process dies
    assert saved - start < len(full["batches"][RESUME_EPOCH]) - 2

    killed = run_script(small_mnist1d, tmp_path / "killed", "--hang-at-step", str(kill_at), wait=False)
    marker = tmp_path / "killed" / "hanging"
    deadline = time.monotonic() + 280
    while not marker.exists():
        assert killed.poll() is None, killed.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the run never reached the step it should be killed at"
        time.sleep(0.2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL

    last = tmp_path / "killed" / "ckpts" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == saved
    run_script(small_mnist1d, tmp_path / "resumed", "--ckpt-path", str(last))
    resumed = torch.load(tmp_path / "resumed" / "record.pt", weights_only=False)
    assert_same_from(full, resumed, RESUME_EPOCH, saved - start)
