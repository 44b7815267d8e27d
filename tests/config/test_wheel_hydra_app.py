"""The built wheel carries the config groups and the search-path plugin: a Hydra app of its
own, in a folder outside the repository, composes ``curation=noise_filter
curation/noise_filter=aum`` from the installed package alone (no searchpath, no import)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

APP = textwrap.dedent('''
    import sys
    import hydra
    from hydra.utils import instantiate

    @hydra.main(version_base="1.3", config_path="configs", config_name="config")
    def main(cfg):
        plan = instantiate(cfg.curation, _convert_="all")
        import curated_loader
        from curated_loader.config import conf_search_path
        print("FILTER", type(plan.noise_filters[0]).__name__, plan.noise_filters[0].warmup_epochs)
        print("SEED", plan.seed, cfg.curation.seed)
        print("PACKAGE", curated_loader.__file__)
        print("SEARCHPATH", conf_search_path())

    main()
''')

# the app's own config, as in lightning-hydra-template: its seed is null
CONFIG = "defaults:\n  - curation: noise_filter\n  - _self_\nseed: null\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, built from this checkout and installed into a throwaway target folder."""
    dist, target = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")  # setuptools' build folder, outside the checkout
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True, timeout=500, cwd=build, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    (wheel,) = dist.glob("curated_loader-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    yamls = {f"curated_loader/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "curated_loader").rglob("*.py")}
    assert yamls and yamls <= names, f"missing YAML: {sorted(yamls - names)}"
    assert sources <= names, f"missing modules: {sorted(sources - names)}"
    assert "hydra_plugins/curated_loader_searchpath/curated_loader_searchpath.py" in names
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, timeout=300,
    )
    return target


def _run_app(app_dir: Path, site: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CURATED_LOADER_SEED", "PL_GLOBAL_SEED")}
    env["PYTHONPATH"] = str(site)  # the installed wheel only, never the checkout
    return subprocess.run(
        [sys.executable, "app.py", *overrides, "hydra.run.dir=out"],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=280,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_foreign_hydra_app_composes_from_the_wheel(installed, tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "config.yaml").write_text(CONFIG)
    (tmp_path / "app.py").write_text(APP)
    assert ROOT not in tmp_path.parents

    proc = _run_app(tmp_path, installed, "curation=noise_filter", "curation/noise_filter=aum")
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = ("FILTER", "SEED", "PACKAGE", "SEARCHPATH")
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(keys))
    assert lines["FILTER"] == "AUMFilter 5"
    assert Path(lines["PACKAGE"]).is_relative_to(installed)
    assert lines["SEARCHPATH"] == "pkg://curated_loader.conf"
    drawn, in_config = lines["SEED"].split()
    assert in_config == "None" and int(drawn) >= 0  # seed: null -> one seed drawn and logged
    assert f"drew seed {drawn}" in proc.stdout + proc.stderr

    # a schema shipped with the groups checks the key at compose time
    proc = _run_app(tmp_path, installed, "curation/noise_filter=aum", "curation.noise_filter.treshold=1")
    assert proc.returncode != 0 and "treshold" in proc.stderr
