"""Structured configs: the schemas of the Hydra config groups under ``conf/``.

Each dataclass mirrors a constructor (``_target_`` names it) and is registered in Hydra's
``ConfigStore``. The root schema ``train_schema`` (:class:`TrainConfig`) types the groups
``data``, ``curation``, ``trainer``, ``callback``, ``monitor``, ``dataset`` and ``paths``,
so a key that does not exist fails while composing (``Key 'ratioo' not in
'InfoBatchConfig'``). Groups whose options build different classes (``model``, ``logger``,
``augment``, ``curation.noise_filter``) are typed ``Any`` at the root; the model, logger
and noise-filter options pull in the schemas stored as ``<group>/base_*``, and
:func:`validate` checks every node with a known ``_target_`` (see :data:`TARGET_SCHEMAS`)
against its schema, so a user's own YAML is checked too.

Value ranges are checked by :func:`validate` (``train()`` calls it first): it builds every
schema object, whose ``__post_init__`` checks its fields, and raises :class:`ConfigError`
naming the full key, e.g. ``curation.prune.ratio: must lie in [0, 1), got 1.5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "TARGET_SCHEMAS",
    "AUMConfig",
    "AmplitudeScaleConfig",
    "AugmentStrengthConfig",
    "CSVLoggerConfig",
    "CartographyConfig",
    "ClassifierConfig",
    "ColorJitterConfig",
    "ComposeConfig",
    "ConfigError",
    "CurationCallbackConfig",
    "CurationConfig",
    "DataConfig",
    "DatasetConfig",
    "GMMConfig",
    "GaussianNoiseConfig",
    "HorizontalFlipConfig",
    "InfoBatchConfig",
    "MonitorConfig",
    "PathsConfig",
    "RandomErasingConfig",
    "RandomResizedCropConfig",
    "ReweightConfig",
    "ShiftConfig",
    "Signal1DCNNConfig",
    "SmallLossConfig",
    "TimeStretchConfig",
    "TrainConfig",
    "TrainerConfig",
    "WandbLoggerConfig",
    "register_configs",
    "validate",
]

LOSS_KEYS = ("ema_loss", "mean_loss", "last_loss")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names its key."""

    def __init__(self, key: str, problem: str | None = None) -> None:
        self.key = key
        self.problem = problem
        super().__init__(key if problem is None else f"{key}: {problem}")


# -- range checks used by the schemas' __post_init__ ----------------------------------------
def _in(key: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    if value is None:
        return
    low_ok = value > lo if lo_open else value >= lo
    high_ok = value < hi if hi_open else value <= hi
    if not (low_ok and high_ok) or (isinstance(value, float) and math.isnan(value)):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(key, f"must lie in {left}{lo}, {hi}{right}, got {value}")


def _at_least(key: str, value: Any, lo: float) -> None:
    if value is not None and not value >= lo:
        raise ConfigError(key, f"must be >= {lo}, got {value}")


def _one_of(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_schedule(policy: Any) -> None:
    """The schedule fields every policy has (see ``curated_loader.curation.schedule``)."""
    _at_least("warmup_epochs", policy.warmup_epochs, 0)
    _in("cooldown_fraction", policy.cooldown_fraction, 0.0, 1.0)


# -- curation policies -----------------------------------------------------------------------
@dataclass
class SmallLossConfig:
    """:class:`~curated_loader.curation.SmallLossFilter`: flag the ``quantile`` largest losses."""

    _target_: str = "curated_loader.curation.SmallLossFilter"
    quantile: float = 0.2
    loss_key: str = "ema_loss"
    warmup_epochs: int = 2
    cooldown_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_schedule(self)
        _in("quantile", self.quantile, 0.0, 1.0)
        _one_of("loss_key", self.loss_key, LOSS_KEYS)


@dataclass
class GMMConfig:
    """:class:`~curated_loader.curation.GMMFilter`: two-component GMM on the normalized loss."""

    _target_: str = "curated_loader.curation.GMMFilter"
    tau: float = 0.1
    bins: Optional[int] = 1024
    max_iter: int = 100
    tol: float = 1e-6
    reg_covar: float = 5e-4
    loss_key: str = "mean_loss"
    warmup_epochs: int = 2
    cooldown_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_schedule(self)
        _in("tau", self.tau, 0.0, 1.0)
        _at_least("bins", self.bins, 2)
        _at_least("max_iter", self.max_iter, 1)
        _in("tol", self.tol, 0.0, math.inf, lo_open=True)
        _at_least("reg_covar", self.reg_covar, 0.0)
        _one_of("loss_key", self.loss_key, LOSS_KEYS)


@dataclass
class AUMConfig:
    """:class:`~curated_loader.curation.AUMFilter`: flag a mean margin below a threshold."""

    _target_: str = "curated_loader.curation.AUMFilter"
    threshold: float = 0.0
    quantile: Optional[float] = None
    warmup_epochs: int = 2
    cooldown_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_schedule(self)
        _in("quantile", self.quantile, 0.0, 1.0)


@dataclass
class CartographyConfig:
    """:class:`~curated_loader.curation.CartographyFilter`: low confidence and low variability."""

    _target_: str = "curated_loader.curation.CartographyFilter"
    max_confidence: float = 0.2
    max_variability: float = 0.1
    warmup_epochs: int = 2
    cooldown_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_schedule(self)
        _in("max_confidence", self.max_confidence, 0.0, 1.0)
        _in("max_variability", self.max_variability, 0.0, 0.5)


@dataclass
class InfoBatchConfig:
    """:class:`~curated_loader.curation.InfoBatchPrune`: skip a ``ratio`` of well-learned samples."""

    _target_: str = "curated_loader.curation.InfoBatchPrune"
    ratio: float = 0.5
    loss_key: str = "ema_loss"
    warmup_epochs: int = 1
    cooldown_fraction: float = 0.125

    def __post_init__(self) -> None:
        _check_schedule(self)
        _in("ratio", self.ratio, 0.0, 1.0, hi_open=True)
        _one_of("loss_key", self.loss_key, LOSS_KEYS)


@dataclass
class ReweightConfig:
    """:class:`~curated_loader.curation.Reweight`: weights ∝ (loss + eps)^alpha, clipped."""

    _target_: str = "curated_loader.curation.Reweight"
    alpha: float = 0.5
    eps: float = 1e-2
    w_min: float = 0.2
    w_max: float = 5.0
    class_balance: bool = False
    as_counts: bool = False
    loss_key: str = "ema_loss"
    warmup_epochs: int = 1
    cooldown_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_schedule(self)
        _in("eps", self.eps, 0.0, math.inf, lo_open=True)
        _in("w_min", self.w_min, 0.0, 1.0)
        _at_least("w_max", self.w_max, 1.0)
        _one_of("loss_key", self.loss_key, LOSS_KEYS)


@dataclass
class AugmentStrengthConfig:
    """:class:`~curated_loader.curation.AugmentStrength`: strength from difficulty."""

    _target_: str = "curated_loader.curation.AugmentStrength"
    mapping: str = "easy_strong"
    min_strength: float = 0.0
    max_strength: float = 1.0
    suspect_strength: float = 0.0
    loss_key: str = "ema_loss"
    warmup_epochs: int = 1
    cooldown_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_schedule(self)
        _one_of("mapping", self.mapping, ("easy_strong", "hard_strong", "constant"))
        _in("min_strength", self.min_strength, 0.0, 1.0)
        _in("max_strength", self.max_strength, 0.0, 1.0)
        if self.min_strength > self.max_strength:
            raise ConfigError("min_strength", f"must be <= max_strength ({self.max_strength}), got {self.min_strength}")
        _in("suspect_strength", self.suspect_strength, 0.0, 1.0)
        _one_of("loss_key", self.loss_key, LOSS_KEYS)


@dataclass
class CurationConfig:
    """:class:`~curated_loader.curation.CurationPlan`: noise filter → prune → reweight → augment.

    ``noise_filter`` is one of the filter schemas (chosen with ``curation/noise_filter=...``);
    ``num_epochs`` defaults to the trainer's ``max_epochs``.
    """

    _target_: str = "curated_loader.curation.CurationPlan"
    noise_filter: Any = None
    prune: Optional[InfoBatchConfig] = None
    reweight: Optional[ReweightConfig] = None
    augment: Optional[AugmentStrengthConfig] = None
    seed: int = 0
    num_epochs: Optional[int] = None
    reduction: str = "normalized"

    def __post_init__(self) -> None:
        _at_least("num_epochs", self.num_epochs, 1)
        _one_of("reduction", self.reduction, ("normalized", "mean"))


@dataclass
class CurationCallbackConfig:
    """:class:`~curated_loader.CurationCallback` (its ``plan`` comes from the ``curation`` group)."""

    _target_: str = "curated_loader.CurationCallback"
    num_classes: Optional[int] = None
    ema: float = 0.9

    def __post_init__(self) -> None:
        _in("ema", self.ema, 0.0, 1.0, hi_open=True)
        _at_least("num_classes", self.num_classes, 2)


@dataclass
class MonitorConfig:
    """:class:`~curated_loader.reporting.CurationMonitor` (the noise mask comes from ``dataset``)."""

    _target_: str = "curated_loader.reporting.CurationMonitor"
    top_k: int = 20
    preview_field: Optional[str] = None
    log_histograms: bool = True
    log_table: bool = True
    table_every_n_epochs: int = 1
    histogram_bins: int = 64

    def __post_init__(self) -> None:
        _at_least("top_k", self.top_k, 0)
        _at_least("table_every_n_epochs", self.table_every_n_epochs, 1)
        _at_least("histogram_bins", self.histogram_bins, 2)


# -- data ------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """:class:`~curated_loader.CuratedDataModule`. ``augment`` is usually ``${augment}``."""

    _target_: str = "curated_loader.CuratedDataModule"
    train_shards: Any = MISSING
    val_shards: Any = None
    test_shards: Any = None
    fields: List[str] = field(default_factory=lambda: ["png", "cls"])
    batch_size: int = 32
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    persistent_workers: bool = True
    pin_memory: bool = False
    seed: int = 0
    mode: str = "stream"
    shuffle_buffer: int = 1000
    resample: bool = False
    equalize: str = "pad"
    decode: List[str] = field(default_factory=lambda: ["torchrgb"])
    transform: Any = None
    eval_transform: Any = None
    augment: Any = None
    on_error: str = "raise"
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.train_shards is None or self.train_shards == "":
            raise ConfigError("train_shards", "is required (a brace pattern, glob, list or index JSON)")
        if not self.fields:
            raise ConfigError("fields", "must name at least one member suffix")
        _at_least("batch_size", self.batch_size, 1)
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        _at_least("num_workers", self.num_workers, 0)
        _at_least("shuffle_buffer", self.shuffle_buffer, 0)
        _one_of("mode", self.mode, ("stream", "indexed"))
        _one_of("equalize", self.equalize, ("pad", "cut"))
        _one_of("on_error", self.on_error, ("raise", "skip"))


@dataclass
class DatasetConfig:
    """Where the training data comes from, beyond the shard paths.

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
    seed: int = 0
    samples_per_shard: int = 1000
    noise_mask: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name is not None:
            _one_of("name", self.name, ("mnist1d_noisy",))
            if not self.dir:
                raise ConfigError("dir", f"is required for dataset {self.name!r}")
        _at_least("num_samples", self.num_samples, 10)
        _in("noise_rate", self.noise_rate, 0.0, 1.0, hi_open=True)
        _one_of("noise_kind", self.noise_kind, ("symmetric", "pairflip"))
        _at_least("samples_per_shard", self.samples_per_shard, 1)


@dataclass
class PathsConfig:
    """``output_dir`` defaults to Hydra's run directory (or ``outputs/<task_name>/<time>``)."""

    data_dir: str = "data"
    output_dir: Optional[str] = None


# -- model -----------------------------------------------------------------------------------
@dataclass
class Signal1DCNNConfig:
    """:class:`~curated_loader.models.Signal1DCNN`."""

    _target_: str = "curated_loader.models.Signal1DCNN"
    length: int = 40
    channels: int = 25
    num_classes: int = 10

    def __post_init__(self) -> None:
        _at_least("length", self.length, 8)
        _at_least("channels", self.channels, 1)
        _at_least("num_classes", self.num_classes, 2)


@dataclass
class ClassifierConfig:
    """:class:`~curated_loader.models.Classifier` around ``net``."""

    _target_: str = "curated_loader.models.Classifier"
    net: Any = None
    lr: float = 1e-2
    weight_decay: float = 0.0
    num_classes: int = 10

    def __post_init__(self) -> None:
        _in("lr", self.lr, 0.0, math.inf, lo_open=True)
        _at_least("weight_decay", self.weight_decay, 0.0)
        _at_least("num_classes", self.num_classes, 2)


# -- trainer and loggers ---------------------------------------------------------------------
@dataclass
class TrainerConfig:
    """The :class:`lightning.pytorch.Trainer` arguments this project sets."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = None
    deterministic: Any = False
    benchmark: Optional[bool] = None
    enable_checkpointing: bool = False
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    default_root_dir: Optional[str] = None

    def __post_init__(self) -> None:
        _at_least("max_epochs", self.max_epochs, 1)
        _at_least("num_nodes", self.num_nodes, 1)
        _at_least("log_every_n_steps", self.log_every_n_steps, 1)
        _at_least("check_val_every_n_epoch", self.check_val_every_n_epoch, 1)
        _at_least("gradient_clip_val", self.gradient_clip_val, 0.0)


@dataclass
class WandbLoggerConfig:
    """:class:`lightning.pytorch.loggers.WandbLogger` (``WANDB_MODE=offline`` works too)."""

    _target_: str = "lightning.pytorch.loggers.WandbLogger"
    project: str = "curated-loader"
    name: Optional[str] = None
    save_dir: Optional[str] = "."
    offline: bool = False
    log_model: bool = False
    group: Optional[str] = None
    job_type: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class CSVLoggerConfig:
    """:class:`lightning.pytorch.loggers.CSVLogger`."""

    _target_: str = "lightning.pytorch.loggers.CSVLogger"
    save_dir: Optional[str] = "."
    name: str = "csv"
    version: Optional[str] = None
    flush_logs_every_n_steps: int = 100

    def __post_init__(self) -> None:
        _at_least("flush_logs_every_n_steps", self.flush_logs_every_n_steps, 1)


# -- augmentations ---------------------------------------------------------------------------
@dataclass
class ComposeConfig:
    """:class:`~curated_loader.augment.Compose` of the augmentations in ``augs``."""

    _target_: str = "curated_loader.augment.Compose"
    augs: List[Any] = field(default_factory=list)


@dataclass
class ShiftConfig:
    _target_: str = "curated_loader.augment.Shift"
    max_shift: int = 8
    mode: str = "circular"
    field: str = "x"

    def __post_init__(self) -> None:
        _at_least("max_shift", self.max_shift, 0)
        _one_of("mode", self.mode, ("circular", "zero"))


@dataclass
class AmplitudeScaleConfig:
    _target_: str = "curated_loader.augment.AmplitudeScale"
    a_max: float = 0.3
    field: str = "x"

    def __post_init__(self) -> None:
        _in("a_max", self.a_max, 0.0, 1.0)


@dataclass
class GaussianNoiseConfig:
    _target_: str = "curated_loader.augment.GaussianNoise"
    sigma_max: float = 0.1
    field: str = "x"

    def __post_init__(self) -> None:
        _at_least("sigma_max", self.sigma_max, 0.0)


@dataclass
class TimeStretchConfig:
    _target_: str = "curated_loader.augment.TimeStretch"
    s_max: float = 0.2
    field: str = "x"

    def __post_init__(self) -> None:
        _in("s_max", self.s_max, 0.0, 1.0, hi_open=True)


@dataclass
class RandomResizedCropConfig:
    _target_: str = "curated_loader.augment.RandomResizedCrop"
    scale_min: float = 0.35
    ratio_max: float = 4.0 / 3.0
    field: str = "png"

    def __post_init__(self) -> None:
        _in("scale_min", self.scale_min, 0.0, 1.0, lo_open=True)
        _at_least("ratio_max", self.ratio_max, 1.0)


@dataclass
class HorizontalFlipConfig:
    _target_: str = "curated_loader.augment.HorizontalFlip"
    p_max: float = 0.5
    field: str = "png"

    def __post_init__(self) -> None:
        _in("p_max", self.p_max, 0.0, 1.0)


@dataclass
class ColorJitterConfig:
    _target_: str = "curated_loader.augment.ColorJitter"
    brightness: float = 0.3
    contrast: float = 0.3
    field: str = "png"

    def __post_init__(self) -> None:
        _at_least("brightness", self.brightness, 0.0)
        _in("contrast", self.contrast, 0.0, 1.0, hi_open=True)


@dataclass
class RandomErasingConfig:
    _target_: str = "curated_loader.augment.RandomErasing"
    p_max: float = 0.5
    area_min: float = 0.02
    area_max: float = 0.25
    ratio_max: float = 3.0
    value: float = 0.0
    field: str = "png"

    def __post_init__(self) -> None:
        _in("p_max", self.p_max, 0.0, 1.0)
        _in("area_min", self.area_min, 0.0, 1.0)
        _in("area_max", self.area_max, 0.0, 1.0)
        if self.area_min > self.area_max:
            raise ConfigError("area_min", f"must be <= area_max ({self.area_max}), got {self.area_min}")
        _at_least("ratio_max", self.ratio_max, 1.0)


# -- the root ----------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """The root schema of ``conf/train.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    callback: CurationCallbackConfig = field(default_factory=CurationCallbackConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    model: Any = MISSING
    augment: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "train"
    seed: int = 0
    test_after_fit: bool = True
    torch_threads: Optional[int] = None

    def __post_init__(self) -> None:
        _at_least("torch_threads", self.torch_threads, 1)


#: Schemas of nodes typed ``Any`` at the root, looked up by their ``_target_``.
TARGET_SCHEMAS: dict[str, type] = {
    schema._target_: schema  # type: ignore[attr-defined]
    for schema in (
        SmallLossConfig, GMMConfig, AUMConfig, CartographyConfig, InfoBatchConfig, ReweightConfig,
        AugmentStrengthConfig, CurationConfig, Signal1DCNNConfig, ClassifierConfig, WandbLoggerConfig,
        CSVLoggerConfig, ComposeConfig, ShiftConfig, AmplitudeScaleConfig, GaussianNoiseConfig,
        TimeStretchConfig, RandomResizedCropConfig, HorizontalFlipConfig, ColorJitterConfig,
        RandomErasingConfig,
    )
}
for _alias, _schema in (
    ("curated_loader.curation.policies.SmallLossFilter", SmallLossConfig),
    ("curated_loader.curation.policies.GMMFilter", GMMConfig),
    ("curated_loader.curation.policies.AUMFilter", AUMConfig),
    ("curated_loader.curation.policies.CartographyFilter", CartographyConfig),
    ("lightning.pytorch.loggers.wandb.WandbLogger", WandbLoggerConfig),
    ("lightning.pytorch.loggers.csv_logs.CSVLogger", CSVLoggerConfig),
    ("lightning.Trainer", TrainerConfig),
    ("lightning.pytorch.Trainer", TrainerConfig),
):
    TARGET_SCHEMAS[_alias] = _schema

_GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "curation/noise_filter": {
        "base_small_loss": SmallLossConfig, "base_gmm": GMMConfig, "base_aum": AUMConfig,
        "base_cartography": CartographyConfig,
    },
    "model": {"base_classifier": ClassifierConfig},
    "logger": {"base_wandb": WandbLoggerConfig, "base_csv": CSVLoggerConfig},
}

_registered = False


def register_configs() -> None:
    """Store the root schema (``train_schema``) and the group schemas (``<group>/base_*``)
    in Hydra's ``ConfigStore``. Idempotent; runs when this module is imported."""
    global _registered
    if _registered:
        return
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schemas in _GROUP_SCHEMAS.items():
        for name, schema in schemas.items():
            cs.store(group=group, name=name, node=schema)
    _registered = True


register_configs()


# -- validation --------------------------------------------------------------------------------
def _schema_of(node: DictConfig) -> type | None:
    object_type = OmegaConf.get_type(node)
    if is_dataclass(object_type):
        return object_type
    target = node.get("_target_") if "_target_" in node else None
    return TARGET_SCHEMAS.get(target) if isinstance(target, str) else None


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _check_node(node: DictConfig, schema: type, path: str) -> None:
    """Merge ``node`` into ``schema`` (unknown keys and bad types fail) and build the object
    (its ``__post_init__`` checks ranges). Errors are re-raised naming the full key."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as exn:
        key = getattr(exn, "key", None)
        full = _join(path, key) if key is not None else path
        known = ", ".join(f.name for f in fields(schema) if not f.name.startswith("_"))
        message = str(exn).splitlines()[0]
        raise ConfigError(full or "<root>", f"{message} (known keys of {schema.__name__}: {known})") from None
    values = OmegaConf.to_container(typed, resolve=True)
    try:
        schema(**values)  # its __post_init__ checks the ranges
    except ConfigError as exn:
        raise ConfigError(_join(path, exn.key), exn.problem) from None


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
        schema = _schema_of(node)
        if schema is not None:
            _check_node(node, schema, path)


def validate(cfg: DictConfig) -> DictConfig:
    """Check every node of ``cfg`` against its schema; return a resolved copy.

    Raises :class:`ConfigError` naming the first bad key (deepest first), e.g.
    ``curation.prune.ratio: must lie in [0, 1), got 1.5`` or
    ``curation.noise_filter.taux: Key 'taux' not in 'GMMConfig' ...``.
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
