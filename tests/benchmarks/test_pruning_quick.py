"""The pruning benchmark runs end to end in its quick mode; the random twin uses exactly the
InfoBatch run's budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "pruning.py"


@pytest.mark.timeout(200)
def test_quick_pruning_prints_table_plot_and_json_for_every_variant_and_final_lr_decay(tmp_path):
    """One quick run with ``--final-lr-decay``: the table, plot and JSON of the constant schedule
    (the random twin uses exactly the InfoBatch run's budget), and full, InfoBatch (both
    reductions) and random repeated with the decay; each delta is taken against the full-data
    run of the same schedule."""
    pytest.importorskip("matplotlib")
    plot, out = tmp_path / "pruning.png", tmp_path / "pruning.json"
    result = run_benchmark(SCRIPT, "--quick", "--plot", str(plot), "--json", str(out), "--final-lr-decay", "1", "0.5",
                           "--reductions", "normalized", "mean", timeout=190)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| lr schedule | method | test acc |")
    assert any(r.startswith("| constant | full data |") for r in rows)
    assert any(r.startswith("| constant | InfoBatch r=0.5 |") for r in rows)
    assert any(r.startswith("| constant | uniform random r=0.5 |") for r in rows)
    assert plot.stat().st_size > 10_000
    saved = json.loads(out.read_text())
    by_method = {r["method"]: r for r in saved["results"] if r["schedule"] == "constant"}
    assert by_method["full"]["passes"] == 4 * 1600
    # InfoBatch prunes some well-learned samples after its warm-up epoch ...
    assert by_method["infobatch"]["passes"] < by_method["full"]["passes"]
    # ... and the uniform random twin spends exactly the same number of sample passes
    assert by_method["random"]["passes"] == by_method["infobatch"]["passes"]

    cells = {(r["schedule"], r["method"]) for r in saved["results"]}
    methods = {"full", "infobatch", "random", "infobatch-mean", "random-mean"}
    assert cells == {(s, m) for s in ("constant", "decay") for m in methods}
    for row in saved["rows"]:
        full = next(r for r in saved["rows"] if r["schedule"] == row["schedule"] and r["method"] == "full")
        assert row["test_acc"] - full["test_acc"] == pytest.approx(row["delta_acc"], abs=1e-9) or row["seeds"] > 1
    # the same table again from the JSON, without training
    again = run_benchmark(SCRIPT, "--from-json", str(out), "--plot", "", timeout=60)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| decay | InfoBatch r=0.5 (mean) |" in again.stdout


@pytest.mark.timeout(400)
def test_quick_noisy_filter_then_prune_keeps_its_floor(tmp_path):
    """On a small noisy case (symmetric 30%, 2 400 training samples, 16 epochs, seed 0) the
    noise filter (`--filter agree10`, the filter the floors were measured with) + InfoBatch r=0.7
    spends exactly the budget of its two random twins and
    keeps a floor measured when it was added: passes saved 33.4% (floor 30%), last-5 accuracy
    +1.27 points over the uniform random twin (floor -1.0), flag precision 0.94 (floor 0.85)."""
    out = tmp_path / "noisy.json"
    result = run_benchmark(SCRIPT, "--quick", "--samples", "3000", "--epochs", "16", "--noise", "sym", "0.3",
                           "--filter", "agree10", "--arms", "full", "filter+infobatch", "--ratios", "0.7",
                           "--final-lr-decay", "2", "0.5", "--schedules", "decay", "--plot", "", "--json", str(out), timeout=390)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["config"]["noise"] == ["sym", 0.3]
    runs = {r["method"]: r for r in saved["results"]}
    assert set(runs) == {"full", "filter+infobatch", "random-filter+infobatch", "filter+random"}
    both, twin = runs["filter+infobatch"], runs["random-filter+infobatch"]
    # the same per-epoch budget for both twins; full data streams all 30% mislabeled samples
    assert both["passes"] == twin["passes"] == runs["filter+random"]["passes"]
    assert runs["full"]["noisy_passes"] == pytest.approx(0.3 * runs["full"]["passes"], rel=1e-3)
    assert 1 - both["passes"] / runs["full"]["passes"] >= 0.30
    assert both["test_acc_last5"] >= twin["test_acc_last5"] - 0.010
    assert both["flag_precision"] >= 0.85 and both["flagged"] > 0
    assert "flag_f1" not in twin  # the uniform twin runs no filter
    # the goal check comes back from the JSON alone
    again = run_benchmark(SCRIPT, "--from-json", str(out), "--plot", "", timeout=60)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| decay | filter + InfoBatch r=0.7 | 1 |" in again.stdout
    assert "| decay | uniform random r=0.7 (twin of filter + InfoBatch) |" in again.stdout


def test_noise_option_rejects_an_unknown_kind(monkeypatch, capsys):
    """Argument checks only: the script's ``main`` in this process (a subprocess would spend its
    time importing what this process has already imported)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports its sibling common.py
    spec = importlib.util.spec_from_file_location("pruning_benchmark_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--quick", "--noise", "gaussian", "0.2", "--plot", ""])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "--noise KIND must be one of" in stderr and "'gaussian'" in stderr
