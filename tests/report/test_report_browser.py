"""The report page in a real headless browser: it renders every section and its images.

Needs Chromium (Debian: ``apt-get install chromium``; ``.ci/run`` installs it). Skipped where
it is not installed, except under ``CI=true``, where a missing browser fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from curated_loader.reporting.report import SECTIONS, write_report


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(300)
def test_report_renders_in_chromium(trained_run, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but Chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (/usr/bin/chromium): the headless-browser check of the report is skipped")
    from PIL import Image

    page = write_report(trained_run.checkpoint, str(trained_run.train_index), tmp_path / "report", top_k=6, progress=False)
    url = page.resolve().as_uri()

    dom = _run(browser, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom.stdout, section
    assert dom.stdout.count('<svg class="signal"') == 6
    assert f'data-count="flagged">{len(trained_run.flagged)}<' in dom.stdout

    shot = tmp_path / "shot.png"
    result = _run(browser, tmp_path / "profile-shot", "--window-size=1200,2400", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    # a rendered page with plots, not a blank or error page: many distinct colours, and the
    # plot colours for kept (green) and flagged (red) present
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500
    pixels = {c for _, c in colours}
    assert any(r < 90 and g > 130 and b < 110 for r, g, b in pixels)  # kept
    assert any(r > 200 and g < 80 and b < 80 for r, g, b in pixels)  # flagged
