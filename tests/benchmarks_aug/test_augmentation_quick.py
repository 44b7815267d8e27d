"""The augmentation benchmark runs end to end in its quick mode: tables, plot and JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "augmentation.py"


@pytest.mark.timeout(120)
def test_quick_benchmark_prints_tables_and_writes_a_plot(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    plot, out = tmp_path / "augment.png", tmp_path / "augment.json"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--plot", str(plot), "--json", str(out),
         "--extra-fixed", "1.0", "--extra-adaptive", "hard_strong:0.25:0.75"],
        capture_output=True, text=True, timeout=110, check=False, cwd=ROOT, env=env,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 90, f"quick mode took {elapsed:.0f} s"
    lines = result.stdout.splitlines()
    assert any("1 torch thread(s)" in line for line in lines)

    def table(title: str) -> list[list[str]]:
        at = lines.index(title)
        rows = []
        for line in lines[at + 2 :]:
            if not line.startswith("|"):
                if rows:
                    break
                continue
            rows.append([c.strip() for c in line.strip("|").split("|")])
        return rows

    acc = table("## Test accuracy")
    assert acc[0][:3] == ["arm", "augmentation", "test acc (median)"]
    names = [row[0] for row in acc[2:]]
    assert names == ["none", "fixed", "adaptive", "fixed 1", "adaptive hard_strong [0.25, 0.75]"]
    assert all(row[2].endswith("%") and 0 < float(row[2].rstrip("%")) <= 100 for row in acc[2:])
    strength = acc[0].index("mean strength")
    assert acc[2][strength] == "0" and acc[3][strength] == "0.500"  # none, fixed 0.5
    paired = table("## Paired by seed")
    assert [row[0] for row in paired[2:]] == names[1:]  # every arm against "none" (and "fixed")
    assert paired[2][1] != "–" and paired[2][5] == "–"  # fixed vs itself

    cost = table("## Augmentation cost per sample (strength 0.5)")
    assert [row[0] for row in cost[2:]] == ["Compose", "Shift", "AmplitudeScale", "TimeStretch", "GaussianNoise"]
    assert all(float(row[1]) > 0 and float(row[4]) > 0 for row in cost[2:])
    fraction = table("## Device path vs a training step")
    assert fraction[-1][0] == "**device path ÷ training step**" and fraction[-1][1].endswith("%**")

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.read_text())
    assert data["args"]["quick"] and data["args"]["epochs"] == 3
    runs = data["results"]
    assert [r["arm"] for r in runs] == names
    for run in runs:
        assert 0.0 <= run["test_acc"] <= 1.0 and len(run["curve"]) == 3
    by_arm = {r["arm"]: r for r in runs}
    assert by_arm["none"]["strength"] == []
    assert all(e["mean"] == pytest.approx(0.5) for e in by_arm["fixed"]["strength"])
    adaptive = by_arm["adaptive"]["strength"]
    assert adaptive[0]["mean"] == pytest.approx(0.5)  # nothing seen yet: every sample at mid strength
    assert adaptive[-1]["p90"] > adaptive[-1]["p10"]  # then per sample, from the ledger
    narrow = by_arm["adaptive hard_strong [0.25, 0.75]"]["strength"]
    assert all(0.25 - 1e-6 <= e["p10"] and e["p90"] <= 0.75 + 1e-6 for e in narrow)
    batched = data["cost"]["batched"]
    assert batched["augment_batch"]["ops"] > 0 and batched["step"]["ops"] > 0


def test_bad_adaptive_spec_is_refused(monkeypatch, capsys):
    """Argument checks only: the script's ``parse_args`` in this process (a subprocess would spend
    its time importing what this process has already imported)."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its own folder first
    spec = importlib.util.spec_from_file_location("augmentation_benchmark_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--quick", "--extra-adaptive", "sideways:0:1"])
    assert exit_info.value.code == 2 and "MAPPING:MIN:MAX" in capsys.readouterr().err
