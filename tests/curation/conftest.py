"""Fixtures of the curation tests."""

from __future__ import annotations

import pytest
from curation_synthetic import Planted, build_planted


@pytest.fixture(scope="module")
def planted() -> Planted:
    return build_planted()
