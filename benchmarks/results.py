"""Where a benchmark's result JSON goes: one helper for every script's ``--json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path | None, result: Any, indent: int = 1) -> None:
    """Write ``result`` as JSON to ``path`` (its folder made if missing); nothing for ``None``."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent) + "\n")
