"""Each schema is generated from its constructor: every argument present, same defaults."""

import inspect
from dataclasses import MISSING, fields

import pytest

from curated_loader.config import EXTRA_CHECKS, SCHEMAS


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def _comparable(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("cls", sorted(SCHEMAS, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_schema_mirrors_the_constructor(cls):
    schema = SCHEMAS[cls]
    params = {n: p for n, p in inspect.signature(cls).parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    by_name = {f.name: f for f in fields(schema)}
    assert set(params) <= set(by_name), f"{schema.__name__} lacks {sorted(set(params) - set(by_name))}"
    for name, param in params.items():
        got = _default(by_name[name])
        if param.default is inspect.Parameter.empty:
            assert got in (inspect.Parameter.empty, "???"), f"{schema.__name__}.{name} has a default the constructor lacks"
            continue
        if isinstance(param.default, (int, float, str, bool, tuple, type(None))):
            assert _comparable(got) == _comparable(param.default), f"{schema.__name__}.{name}: {got!r} != {param.default!r}"


def test_the_drifted_arguments_are_there():
    """The hand-written schemas had lost these two."""
    from curated_loader import CuratedDataModule
    from curated_loader.reporting import CurationMonitor

    assert "augment_on" in SCHEMAS[CuratedDataModule].__dataclass_fields__
    assert "augment_previews" in SCHEMAS[CurationMonitor].__dataclass_fields__


@pytest.mark.parametrize("cls", sorted(EXTRA_CHECKS, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_extra_checks_name_real_arguments(cls):
    params = inspect.signature(cls).parameters
    assert set(EXTRA_CHECKS[cls]) <= set(params)
