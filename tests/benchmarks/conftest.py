"""Helpers for the benchmark quick-mode tests: each runs a committed script as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str | Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` (or a path) with ``args`` from the repository root, the
    package importable, output captured; the caller checks the return code."""
    path = script if isinstance(script, Path) else ROOT / "benchmarks" / script
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=ROOT, env=env)
