"""Structured configs: the schemas of the Hydra config groups in ``conf/``, generated from
the constructors they configure.

Every schema is ``hydra_zen.builds(<class>, populate_full_signature=True)``: its fields,
types and defaults are read from the constructor's signature, so a schema cannot drift
from the class (:data:`SCHEMAS`). Range checks live in the constructors themselves
(``__post_init__`` of the curation policies, see :mod:`curated_loader.checks`);
:data:`EXTRA_CHECKS` holds the ranges of the few constructors that do not check their own
arguments yet (Lightning's ``Trainer`` and ``CSVLogger``, the data module, the callback).

Hydra sees the schemas through its ``ConfigStore`` (:func:`register_configs`): the root
``train_schema`` of ``conf/train.yaml``, and ``<group>/base_*`` which the group options
list in their defaults (``curation/base_plan``, ``curation/noise_filter/base_gmm``, ...),
so a wrong key or a wrong type fails while composing, naming the key. The search-path
plugin in ``hydra_plugins/curated_loader_searchpath`` registers them and adds the config
groups (:func:`conf_search_path`) for any Hydra app in the environment — no import needed.

:func:`validate` (``examples/train.py`` calls it first) checks every node with a known
``_target_`` — a user's own YAML too — and builds the nodes of this package's classes, so
out-of-range values fail before any work, as :class:`ConfigError` naming the full key,
e.g. ``curation.prune.ratio: must be in [0.0, 1.0), got 1.5``.
"""

from __future__ import annotations

import collections.abc
import importlib.util
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, List, Literal, Optional, Union, get_args, get_origin

from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from hydra_zen import BuildsFn
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .augment import (
    AmplitudeScale,
    ColorJitter,
    Compose,
    GaussianNoise,
    HorizontalFlip,
    RandomErasing,
    RandomResizedCrop,
    Shift,
    TimeStretch,
)
from .checks import ConfigError, OneOf, Range, run_checks
from .curation import (
    AugmentStrength,
    AUMFilter,
    CartographyFilter,
    CurationPlan,
    GMMFilter,
    LossMarginFilter,
    InfoBatchPrune,
    Reweight,
    SmallLossFilter,
)
from .lightning.callback import CurationCallback
from .lightning.datamodule import CuratedDataModule
from .models import Classifier, Signal1DCNN
from .reporting import CurationMonitor

__all__ = [
    "EXTRA_CHECKS",
    "SCHEMAS",
    "ConfigError",
    "CurationPlanConfig",
    "DatasetConfig",
    "PathsConfig",
    "TrainConfig",
    "conf_search_path",
    "register_configs",
    "schema_for",
    "validate",
]


# -- generating schemas ------------------------------------------------------------------------
class _Builds(BuildsFn):
    """hydra-zen's ``builds`` with the annotations this package uses made Hydra-typed:
    ``X | None`` → ``Optional[X]``, ``Literal["a", "b"]`` → ``str`` (the constructor checks
    the choice), ``Sequence[X]`` → ``List[X]``."""

    @classmethod
    def _sanitized_type(cls, type_: Any, **kwargs: Any) -> Any:
        if isinstance(type_, types.UnionType):
            type_ = Union[get_args(type_)]  # noqa: UP007 - Hydra understands typing.Union
        origin, args = get_origin(type_), get_args(type_)
        if origin is Literal and all(isinstance(a, str) for a in args):
            type_ = str
        elif origin is collections.abc.Sequence:
            type_ = List[args[0]] if args else List[Any]  # noqa: UP006
        return super()._sanitized_type(type_, **kwargs)


def _schema(target: type, **extra: Any) -> type:
    """The schema of ``target``: every constructor argument with its type and default;
    ``extra`` adds or overrides fields (e.g. keys a ``**kwargs`` constructor accepts)."""
    return _Builds.builds(
        target, populate_full_signature=True, zen_dataclass={"cls_name": f"{target.__name__}Config"}, **extra
    )


#: class → its generated schema, for every class the shipped config groups build.
SCHEMAS: dict[type, type] = {
    cls: _schema(cls)
    for cls in (
        SmallLossFilter, GMMFilter, AUMFilter, CartographyFilter, LossMarginFilter, InfoBatchPrune, Reweight, AugmentStrength,
        CurationCallback, CurationMonitor, Signal1DCNN, Classifier, Trainer, CSVLogger, Compose, Shift,
        AmplitudeScale, GaussianNoise, TimeStretch, RandomResizedCrop, HorizontalFlip, ColorJitter, RandomErasing,
    )
}
SCHEMAS[CuratedDataModule] = _schema(CuratedDataModule, train_shards=MISSING)
# WandbLogger passes **kwargs to wandb.init; the shipped YAML uses these three of them
SCHEMAS[WandbLogger] = _schema(WandbLogger, group=None, job_type=None, tags=[])


@dataclass
class CurationPlanConfig(_schema(CurationPlan)):  # type: ignore[misc]
    """:class:`~curated_loader.curation.CurationPlan` with its stages typed by their schemas
    (``noise_filter`` stays open: one filter or a list, chosen by ``curation/noise_filter``)."""

    prune: Optional[SCHEMAS[InfoBatchPrune]] = None  # type: ignore[valid-type]
    reweight: Optional[SCHEMAS[Reweight]] = None  # type: ignore[valid-type]
    augment: Optional[SCHEMAS[AugmentStrength]] = None  # type: ignore[valid-type]


SCHEMAS[CurationPlan] = CurationPlanConfig


def schema_for(target: str | type) -> type | None:
    """The schema of a class or of a ``_target_`` path (any alias of the class), else None."""
    cls = _locate(target) if isinstance(target, str) else target
    return SCHEMAS.get(cls) if cls is not None else None


@lru_cache(maxsize=None)
def _locate(path: str) -> type | None:
    try:
        return get_class(path)
    except Exception:  # noqa: BLE001 - an unknown target has no schema; instantiate reports it
        return None


# -- ranges of constructors that do not check their arguments themselves --------------------
#: Checked by :func:`validate` before anything is built: ranges of constructors that do not
#: check their arguments themselves, and the data module's and callback's own checks (built
#: with nested objects, they are not instantiated just to validate).
EXTRA_CHECKS: dict[type, dict[str, Callable[[str, Any], None]]] = {
    Trainer: {
        "max_epochs": Range(1, optional=True), "num_nodes": Range(1), "log_every_n_steps": Range(1, optional=True),
        "check_val_every_n_epoch": Range(1, optional=True), "gradient_clip_val": Range(0.0, optional=True),
    },
    CSVLogger: {"flush_logs_every_n_steps": Range(1)},
    # built with nested objects (augment, plan): validated by the checks their constructors run
    CuratedDataModule: CuratedDataModule.argument_checks,
    CurationCallback: CurationCallback.argument_checks,
}


# -- the example app's own settings and the root ------------------------------------------------
@dataclass
class DatasetConfig:
    """Where the training data of ``examples/train.py`` comes from, beyond the shard paths.

    ``name: mnist1d_noisy`` makes MNIST-1D shards with injected label noise in ``dir`` when
    they are missing (``make_if_missing``). ``noise_mask`` (a ``.npy`` of bools, one per
    training sample) enables the noise-detection metrics; it is read only for evaluation.
    """

    name: Optional[str] = None
    dir: Optional[str] = None
    make_if_missing: bool = True
    num_samples: int = 10000
    noise_rate: float = 0.4
    noise_kind: str = "symmetric"
    seed: Optional[int] = 0
    samples_per_shard: int = 1000
    noise_mask: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name is not None:
            OneOf(("mnist1d_noisy",))("name", self.name)
            if not self.dir:
                raise ConfigError("dir", f"is required for dataset {self.name!r}")
        run_checks(self, {
            "num_samples": Range(10), "noise_rate": Range(0.0, 1.0, hi_open=True),
            "noise_kind": OneOf(("symmetric", "pairflip")), "samples_per_shard": Range(1),
        })


@dataclass
class PathsConfig:
    """``output_dir`` defaults to Hydra's run directory (or ``outputs/<task_name>/<time>``)."""

    data_dir: str = "data"
    output_dir: Optional[str] = None


@dataclass
class TrainConfig:
    """The root schema of ``conf/train.yaml``. ``seed: null`` draws one seed for the run
    (logged; see :func:`curated_loader.curation.plan.resolve_seed`)."""

    data: SCHEMAS[CuratedDataModule] = field(default_factory=SCHEMAS[CuratedDataModule])  # type: ignore[valid-type]
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    curation: CurationPlanConfig = field(default_factory=CurationPlanConfig)
    callback: SCHEMAS[CurationCallback] = field(default_factory=SCHEMAS[CurationCallback])  # type: ignore[valid-type]
    monitor: SCHEMAS[CurationMonitor] = field(default_factory=SCHEMAS[CurationMonitor])  # type: ignore[valid-type]
    model: Any = MISSING
    augment: Any = None
    trainer: SCHEMAS[Trainer] = field(default_factory=SCHEMAS[Trainer])  # type: ignore[valid-type]
    logger: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "train"
    seed: Optional[int] = 0
    test_after_fit: bool = True
    torch_threads: Optional[int] = None

    def __post_init__(self) -> None:
        Range(1, optional=True)("torch_threads", self.torch_threads)


_APP_SCHEMAS = (DatasetConfig, PathsConfig, TrainConfig)

#: ConfigStore entries: the root schema, and the group schemas the group options extend.
STORED: dict[tuple[str | None, str], type] = {
    (None, "train_schema"): TrainConfig,
    ("curation", "base_plan"): CurationPlanConfig,
    ("curation/noise_filter", "base_small_loss"): SCHEMAS[SmallLossFilter],
    ("curation/noise_filter", "base_gmm"): SCHEMAS[GMMFilter],
    ("curation/noise_filter", "base_aum"): SCHEMAS[AUMFilter],
    ("curation/noise_filter", "base_cartography"): SCHEMAS[CartographyFilter],
    ("curation/noise_filter", "base_loss_margin"): SCHEMAS[LossMarginFilter],
    ("augment", "base_compose"): SCHEMAS[Compose],
    ("model", "base_classifier"): SCHEMAS[Classifier],
    ("logger", "base_wandb"): SCHEMAS[WandbLogger],
    ("logger", "base_csv"): SCHEMAS[CSVLogger],
}


def register_configs() -> None:
    """Store :data:`STORED` in Hydra's ``ConfigStore`` (idempotent). The search-path plugin
    calls it when Hydra starts; importing this module does too."""
    cs = ConfigStore.instance()
    for (group, name), node in STORED.items():
        cs.store(group=group, name=name, node=node, provider="curated_loader")


register_configs()


def conf_search_path() -> str:
    """Where the config groups are: the ``conf/`` folder of a source checkout this package
    runs from, else the installed package ``pkg://curated_loader.conf``."""
    package = importlib.util.find_spec("curated_loader")
    if package is not None and package.origin is not None:
        root = Path(package.origin).resolve().parent.parent
        if (root / "pyproject.toml").exists() and (root / "conf" / "curation").is_dir():
            return f"file://{root / 'conf'}"
    return "pkg://curated_loader.conf"


# -- validation --------------------------------------------------------------------------------
def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _schema_of(node: DictConfig) -> tuple[type | None, type | None]:
    """(schema, class) of a node: an app schema by its type, else by its ``_target_``."""
    object_type = OmegaConf.get_type(node)
    if object_type in _APP_SCHEMAS:
        return object_type, None
    target = node.get("_target_") if "_target_" in node else None
    if not isinstance(target, str):
        return None, None
    cls = _locate(target)
    return (SCHEMAS.get(cls), cls) if cls is not None else (None, None)


def _named_key(path: str, exn: Exception, schema: type) -> ConfigError:
    """A constructor's error as a :class:`ConfigError` naming the full key: its own ``key``,
    else the one argument its message names, else the node."""
    if isinstance(exn, ConfigError):
        return ConfigError(_join(path, exn.key), exn.problem)
    message = str(exn)
    named = [f for f in schema.__dataclass_fields__ if not f.startswith("_") and re.search(rf"\b{f}\b", message)]
    return ConfigError(_join(path, named[0]) if len(named) == 1 else (path or "<root>"), message)


def _check_node(node: DictConfig, schema: type, cls: type | None, path: str) -> None:
    """Merge ``node`` into ``schema`` (unknown keys and bad types fail), run the ranges of
    :data:`EXTRA_CHECKS`, and build the object when it is one of this package's (its
    constructor checks its ranges). Errors are re-raised naming the full key."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as exn:
        key = getattr(exn, "key", None)
        known = ", ".join(f for f in schema.__dataclass_fields__ if not f.startswith("_"))
        message = str(exn).splitlines()[0]
        raise ConfigError(_join(path, key) if key is not None else path or "<root>",
                          f"{message} (known keys of {schema.__name__}: {known})") from None
    try:
        if cls is None:  # an app schema: its __post_init__ checks
            schema(**OmegaConf.to_container(typed, resolve=True))
            return
        run_checks(typed, EXTRA_CHECKS.get(cls, {}))
        if cls.__module__.startswith("curated_loader.") and cls not in EXTRA_CHECKS:
            instantiate(typed, _convert_="all")
    except InstantiationException as exn:
        cause = exn.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise _named_key(path, cause, schema) from None
        raise
    except (ValueError, TypeError) as exn:
        raise _named_key(path, exn, schema) from None


def _walk(node: Any, original: Any, path: str) -> None:
    """Check ``node`` (resolved) deepest first. Containers that were interpolations in
    ``original`` (e.g. ``data.augment: ${augment}``) are checked where they come from."""
    if not isinstance(node, (DictConfig, ListConfig)) or node._is_none() or node._is_missing():
        return
    keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        child = node._get_node(key)
        if not isinstance(child, (DictConfig, ListConfig)):
            continue
        source = original._get_node(key) if isinstance(original, (DictConfig, ListConfig)) else None
        if source is not None and source._is_interpolation():
            continue
        _walk(child, source, _join(path, key))
    if isinstance(node, DictConfig):
        schema, cls = _schema_of(node)
        if schema is not None:
            _check_node(node, schema, cls, path)


def validate(cfg: DictConfig) -> DictConfig:
    """Check every node of ``cfg`` against its schema and ranges; return a resolved copy.

    Raises :class:`ConfigError` naming the first bad key (deepest first), e.g.
    ``curation.prune.ratio: must be in [0.0, 1.0), got 1.5`` or
    ``curation.noise_filter.taux: Key 'taux' not in 'GMMFilterConfig' ...``.
    """
    resolved = cfg.copy()
    try:
        OmegaConf.resolve(resolved)
    except OmegaConfBaseException as exn:
        key = getattr(exn, "full_key", None) or "<root>"
        raise ConfigError(str(key), str(exn).splitlines()[0]) from None
    missing = sorted(OmegaConf.missing_keys(resolved))
    if missing:
        raise ConfigError(missing[0], "is missing (set it on the command line or in a config)")
    _walk(resolved, cfg, "")
    return resolved
