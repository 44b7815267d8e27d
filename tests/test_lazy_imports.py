"""The package's public names load on first use: the data path and the command line start
without Lightning, W&B or matplotlib, and every exported name resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import curated_loader


def test_every_public_name_resolves() -> None:
    for name in curated_loader.__all__:
        assert getattr(curated_loader, name).__name__ == name
    assert set(curated_loader.__all__) <= set(dir(curated_loader))
    with pytest.raises(AttributeError, match="no_such_name"):
        curated_loader.no_such_name  # noqa: B018


@pytest.mark.timeout(120)
def test_data_path_and_cli_import_without_lightning() -> None:
    code = (
        "import sys, curated_loader, curated_loader.data.pipeline, curated_loader.cli, curated_loader.curation\n"
        "print(sorted(m for m in ('lightning', 'wandb', 'matplotlib', 'hydra') if m in sys.modules))\n"
        "curated_loader.CuratedDataModule\n"
        "print('lightning' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"  # the Lightning name still imports Lightning, on first use
