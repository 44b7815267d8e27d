"""Two "nodes" on one machine: two torchrun launches (--nnodes=2, one rank each) over 127.0.0.1.

Each rank is local rank 0 of its node, has its own snapshot in its own process's shared
memory and its own two loader workers. Per epoch both ranks must hold identical decisions,
yield equal batch counts, and between them deliver every kept sample exactly once (plus the
pad samples the epoch plan adds to equalize the ranks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from curated_loader.data.writer import write_samples
from tests.conftest import free_port, id_samples

SCRIPT = Path(__file__).with_name("multinode_train.py")
ROOT = Path(__file__).resolve().parents[2]
MODES = ("stream", "indexed")
SHARD_SIZES = [40] * 5  # 5 shards over 2 ranks x 2 workers: uneven shares, so padding is exercised


def _launch_nodes(index: str, out: Path, timeout: float) -> list[str]:
    """Start both torchrun "nodes", wait for both; returns their logs. Kills both on failure."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs, logs = [], []
    for node in range(2):
        log = open(out / f"node{node}.log", "w")  # noqa: SIM115 (closed below, after the wait)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
               "--master_addr=127.0.0.1", f"--master_port={port}", str(SCRIPT), index, str(out), *MODES]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out))
        logs.append(log)
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    texts = [(out / f"node{node}.log").read_text() for node in range(2)]
    for node, proc in enumerate(procs):
        assert proc.returncode == 0, f"node {node} exited with {proc.returncode}:\n{texts[node][-4000:]}"
    return texts


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    index = write_samples(id_samples(SHARD_SIZES), tmp / "shards", samples_per_shard=SHARD_SIZES[0], progress=False)
    out = tmp / "run"
    out.mkdir()
    _launch_nodes(str(tmp / "shards" / "train-index.json"), out, timeout=240)
    return index, out


def _ranks(out: Path, mode: str) -> list[dict]:
    return [json.loads((out / mode / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.multinode
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", MODES)
def test_two_nodes_agree_and_deliver_each_kept_sample_once(two_node_run, mode):
    index, out = two_node_run
    ranks = _ranks(out, mode)
    assert [(r["global_rank"], r["node_rank"], r["local_rank"], r["world_size"]) for r in ranks] == [(0, 0, 0, 2), (1, 1, 0, 2)]
    assert [r["env"]["LOCAL_RANK"] for r in ranks] == ["0", "0"]  # both ranks are local rank 0 of their node
    epochs = sorted(ranks[0]["epochs"], key=int)
    assert len(epochs) == 3
    for epoch in epochs:
        a, b = (r["epochs"][epoch] for r in ranks)
        assert (a["rank"], a["world"], b["rank"], b["world"]) == (0, 2, 1, 2)  # the loaders split by global rank
        assert a["batches"] == b["batches"] > 0  # equal work: no rank waits for the other
        assert a["kept"] == b["kept"]
        assert a["decision"] == b["decision"]  # identical decisions, computed on each node
        delivered = Counter(a["ids"]) + Counter(b["ids"])
        assert delivered == Counter(a["kept"]) + Counter(a["pad"]) + Counter(b["pad"])  # each kept id once, plus pads
    assert len(ranks[0]["epochs"]["0"]["kept"]) == index.num_samples
    assert len(ranks[0]["epochs"][epochs[-1]]["kept"]) < index.num_samples  # the filter and pruning acted


@pytest.mark.multinode
@pytest.mark.timeout(300)
def test_two_nodes_write_one_curation_state(two_node_run):
    _, out = two_node_run
    for mode in MODES:
        states = list((out / mode).rglob("curation_state.pt"))
        assert len(states) == 1, states  # written by global rank 0 only, not once per node
