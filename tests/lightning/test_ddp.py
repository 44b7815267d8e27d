"""Real DDP: 2 CPU processes (gloo) hold identical decisions and yield equal batch counts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import first_train_shards

SCRIPT = Path(__file__).with_name("ddp_train.py")


@pytest.mark.timeout(300)
def test_ddp_ranks_agree_and_do_not_hang_with_70_percent_pruned(noisy_mnist1d, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([sys.executable, str(SCRIPT), first_train_shards(noisy_mnist1d, 8), str(tmp_path)], capture_output=True, text=True, timeout=280, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["batches"] == ranks[1]["batches"]  # equal batch counts every epoch
    assert ranks[0]["decisions"] == ranks[1]["decisions"]  # identical decisions every epoch
    n = 8000  # the first 8 training shards
    kept = ranks[0]["decisions"]["1"][0]
    assert kept <= 0.31 * n  # ~70% dropped, and the run finished
    # the pruned epoch is correspondingly shorter on both ranks
    assert ranks[0]["batches"]["2"] <= 0.4 * ranks[0]["batches"]["0"]
