"""Each schema mirrors its constructor: same parameter names where both exist, same defaults."""

import importlib
import inspect
from dataclasses import MISSING, fields

import pytest

from curated_loader.config import TARGET_SCHEMAS


def _target(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", sorted(p for p in TARGET_SCHEMAS if p.startswith("curated_loader.")))
def test_schema_defaults_match_the_constructor(path):
    schema = TARGET_SCHEMAS[path]
    params = inspect.signature(_target(path)).parameters
    compared = 0
    for f in fields(schema):
        if f.name.startswith("_") or f.name not in params:
            continue
        default = params[f.name].default
        if default is inspect.Parameter.empty or f.default is MISSING:
            continue
        assert f.default == default, f"{schema.__name__}.{f.name} = {f.default!r}, but {path} defaults to {default!r}"
        compared += 1
    defaulted = [n for n, p in params.items() if p.default is not inspect.Parameter.empty]
    assert compared > 0 or not defaulted, f"{schema.__name__} shares no defaulted parameter with {path}"
