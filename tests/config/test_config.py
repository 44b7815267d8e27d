"""Every Hydra config group composes and instantiates; bad keys and values fail naming the key."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf, open_dict

from curated_loader import CuratedDataModule, CurationCallback
from curated_loader.augment import (
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
from curated_loader.config import ConfigError, validate
from curated_loader.curation import (
    AugmentStrength,
    AUMFilter,
    CartographyFilter,
    CurationPlan,
    GMMFilter,
    InfoBatchPrune,
    Reweight,
    SmallLossFilter,
)
from curated_loader.models import Classifier, Signal1DCNN
from curated_loader.reporting import CurationMonitor

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def _load_train_script():
    spec = importlib.util.spec_from_file_location("curated_examples_train", ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("curated_examples_train", module)
    spec.loader.exec_module(module)
    return module


train_script = _load_train_script()


def compose(*overrides: str, tmp: Path | None = None):
    extra = [f"paths.output_dir={tmp}", f"paths.data_dir={tmp}/data"] if tmp is not None else []
    return train_script.compose_config([*overrides, *extra])


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_on_disk():
    assert options("curation") == sorted(["adaptive_augment", "full", "infobatch", "none", "noise_filter", "reweight"])
    assert options("curation/noise_filter") == ["aum", "cartography", "gmm", "loss_margin", "small_loss"]
    assert options("trainer") == ["cpu", "ddp", "ddp_sim", "default", "gpu"]
    assert options("logger") == ["csv", "none", "wandb"]
    assert options("augment") == ["image_default", "none", "signal_default"]
    assert {"mnist1d", "shards"} <= set(options("data"))
    assert "signal_cnn" in options("model")
    assert "mnist1d_noisy" in options("experiment")


def test_root_config_instantiates(tmp_path):
    cfg = validate(compose(tmp=tmp_path))
    dm = instantiate(cfg.data, _convert_="all")
    assert isinstance(dm, CuratedDataModule)
    assert dm.fields == ("npy", "cls") and dm.batch_size == 128 and dm.mode == "stream"
    assert str(dm.shards["train"]).endswith("mnist1d_n10000_symmetric0.4_s0/train-index.json")
    model = instantiate(cfg.model, _convert_="all")
    assert isinstance(model, Classifier) and isinstance(model.net, Signal1DCNN)
    callback = instantiate(cfg.callback, plan=instantiate(cfg.curation, _convert_="all"))
    assert isinstance(callback, CurationCallback) and callback.ema == 0.9
    monitor = instantiate(cfg.monitor, noise_mask=None)
    assert isinstance(monitor, CurationMonitor) and monitor.top_k == 20
    trainer = instantiate(cfg.trainer, _convert_="all")
    assert trainer.max_epochs == 20 and trainer.num_devices == 1
    assert isinstance(instantiate(cfg.logger), CSVLogger)


EXPECTED_PLANS = {
    "none": (None, None, None, None),
    "noise_filter": (GMMFilter, None, None, None),
    "infobatch": (None, InfoBatchPrune, None, None),
    "reweight": (None, None, Reweight, None),
    "adaptive_augment": (None, None, None, AugmentStrength),
    "full": (GMMFilter, InfoBatchPrune, Reweight, AugmentStrength),
}


@pytest.mark.parametrize("option", sorted(EXPECTED_PLANS))
def test_curation_options(option, tmp_path):
    cfg = validate(compose(f"curation={option}", tmp=tmp_path))
    plan = instantiate(cfg.curation, _convert_="all")
    assert isinstance(plan, CurationPlan)
    noise, prune, reweight, augment = EXPECTED_PLANS[option]
    assert [type(f) for f in plan.noise_filters] == ([noise] if noise else [])
    for got, want in ((plan.prune, prune), (plan.reweight, reweight), (plan.augment, augment)):
        assert (got is None) if want is None else isinstance(got, want)


@pytest.mark.parametrize(
    ("option", "cls"),
    [("gmm", GMMFilter), ("small_loss", SmallLossFilter), ("aum", AUMFilter), ("cartography", CartographyFilter)],
)
def test_noise_filter_options(option, cls, tmp_path):
    cfg = validate(compose("curation=noise_filter", f"curation/noise_filter={option}", tmp=tmp_path))
    plan = instantiate(cfg.curation, _convert_="all")
    assert len(plan.noise_filters) == 1 and isinstance(plan.noise_filters[0], cls)
    assert plan.noise_filters[0].warmup_epochs == cfg.curation.noise_filter.warmup_epochs


def test_overrides_reach_the_objects(tmp_path):
    cfg = validate(compose("curation=infobatch", "curation.prune.ratio=0.5", "curation.prune.warmup_epochs=2", tmp=tmp_path))
    plan = instantiate(cfg.curation, _convert_="all")
    assert plan.prune == InfoBatchPrune(ratio=0.5, warmup_epochs=2, cooldown_fraction=0.125)
    cfg = validate(compose("curation=noise_filter", "curation.noise_filter.tau=0.3", "seed=7", "data.batch_size=64", tmp=tmp_path))
    plan = instantiate(cfg.curation, _convert_="all")
    assert plan.noise_filters[0].tau == 0.3 and plan.seed == 7
    dm = instantiate(cfg.data, _convert_="all")
    assert dm.batch_size == 64 and dm.seed == 7


def test_trainer_options(tmp_path):
    cfg = validate(compose("trainer=ddp_sim", tmp=tmp_path))
    trainer = instantiate(cfg.trainer, _convert_="all")
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    for option, accelerator in (("cpu", "cpu"), ("gpu", "gpu"), ("ddp", "gpu")):
        cfg = validate(compose(f"trainer={option}", tmp=tmp_path))
        assert cfg.trainer.accelerator == accelerator
        if accelerator == "cpu" or torch.cuda.is_available():
            trainer = instantiate(cfg.trainer, _convert_="all")
            assert trainer.max_epochs == cfg.trainer.max_epochs
    assert validate(compose("trainer=ddp", tmp=tmp_path)).trainer.strategy == "ddp"


def test_logger_options(tmp_path):
    cfg = validate(compose("logger=wandb", tmp=tmp_path))
    logger = instantiate(cfg.logger, _convert_="all")  # no run starts until .experiment is used
    assert isinstance(logger, WandbLogger) and logger.save_dir == str(tmp_path)
    assert isinstance(instantiate(validate(compose("logger=csv", tmp=tmp_path)).logger), CSVLogger)
    assert validate(compose("logger=none", tmp=tmp_path)).logger is None


def test_augment_options(tmp_path):
    assert validate(compose("augment=none", tmp=tmp_path)).augment is None
    cfg = validate(compose("augment=signal_default", "curation=adaptive_augment", tmp=tmp_path))
    aug = instantiate(cfg.augment, _convert_="all")
    assert isinstance(aug, Compose)
    assert [type(a) for a in aug.augs] == [Shift, AmplitudeScale, TimeStretch, GaussianNoise]
    assert aug.field == "npy"  # follows data.fields[0]
    sample = {"npy": torch.linspace(0, 1, 40), "__key__": "k", "__id__": 3, "__epoch__": 1, "__seed__": 0}
    assert torch.equal(aug(sample, 0.0)["npy"], sample["npy"])
    assert not torch.equal(aug(sample, 1.0)["npy"], sample["npy"])
    dm = instantiate(cfg.data, _convert_="all")  # the data module gets the same augmentation
    assert isinstance(dm.augment, Compose) and len(dm.augment.augs) == 4
    assert aug.compile is False  # the constructor's default, reached through augment/base_compose
    on = validate(compose("augment=signal_default", "augment.compile=true", tmp=tmp_path))
    assert instantiate(on.data, _convert_="all").augment.compile is True
    cfg = validate(compose("augment=image_default", "data=shards", "data.train_shards=x.tar", tmp=tmp_path))
    aug = instantiate(cfg.augment, _convert_="all")
    assert [type(a) for a in aug.augs] == [RandomResizedCrop, HorizontalFlip, ColorJitter, RandomErasing]
    assert aug.field == "png"


def test_experiment(tmp_path):
    cfg = validate(compose("experiment=mnist1d_noisy", tmp=tmp_path))
    assert cfg.task_name == "mnist1d_noisy" and cfg.curation.noise_filter._target_.endswith("GMMFilter")
    assert cfg.dataset.noise_rate == 0.4 and cfg.torch_threads == 1
    cfg = validate(compose("experiment=mnist1d_noisy", "curation=none", tmp=tmp_path))
    assert cfg.curation.noise_filter is None  # command-line choice wins over the experiment's


def test_data_shards_needs_train_shards(tmp_path):
    with pytest.raises(ConfigError, match="data.train_shards"):
        validate(compose("data=shards", tmp=tmp_path))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["curation=infobatch", "curation.prune.ratio=1.5"], "curation.prune.ratio"),
        (["curation=noise_filter", "curation/noise_filter=small_loss", "curation.noise_filter.quantile=-0.1"],
         "curation.noise_filter.quantile"),
        (["curation=noise_filter", "curation.noise_filter.tau=2"], "curation.noise_filter.tau"),
        (["curation=full", "curation.augment.max_strength=1.5"], "curation.augment.max_strength"),
        (["curation=reweight", "curation.reweight.w_max=0.5"], "curation.reweight.w_max"),
        (["curation=noise_filter", "curation.noise_filter.warmup_epochs=-1"], "curation.noise_filter.warmup_epochs"),
        (["dataset.noise_rate=1.2"], "dataset.noise_rate"),
        (["data.batch_size=0"], "data.batch_size"),
        (["data.mode=random"], "data.mode"),
        (["trainer.max_epochs=0"], "trainer.max_epochs"),
        (["callback.ema=1.0"], "callback.ema"),
        (["augment=signal_default", "augment.augs.0.mode=wrap"], "augment.augs[0].mode"),
    ],
)
def test_out_of_range_names_the_key(overrides, key, tmp_path):
    cfg = compose(*overrides, tmp=tmp_path)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_train_rejects_bad_values_before_any_work(tmp_path):
    cfg = compose("curation=infobatch", "curation.prune.ratio=1.5", tmp=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"curation\.prune\.ratio: must be in \[0\.0, 1\.0\), got 1\.5"):
        train_script.train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["curation=infobatch", "curation.prune.ratioo=0.5"], "curation.prune.ratioo"),
        (["trainer.max_epoch=3"], "trainer.max_epoch"),
        (["curation=noise_filter", "curation.noise_filter.taux=0.3"], "curation.noise_filter.taux"),
        (["data.batchsize=8"], "data.batchsize"),
    ],
)
def test_unknown_key_fails_at_compose(overrides, key):
    with pytest.raises(ConfigCompositionException) as info:
        compose(*overrides)
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["curation=noise_filter", "curation.noise_filter.tau=abc"], "curation.noise_filter.tau"),
        (["curation=noise_filter", "curation.noise_filter.bins=many"], "curation.noise_filter.bins"),  # Optional[int]
        (["curation=infobatch", "curation.prune.ratio=half"], "curation.prune.ratio"),
        (["curation=reweight", "curation.reweight.class_balance=maybe"], "curation.reweight.class_balance"),
        (["data.batch_size=big"], "data.batch_size"),
        (["trainer.max_epochs=ten"], "trainer.max_epochs"),
        (["seed=abc"], "seed"),
    ],
)
def test_wrong_type_fails_at_compose(overrides, key):
    with pytest.raises(ConfigCompositionException) as info:
        compose(*overrides)
    assert key in str(info.value)


def test_seed_null_draws_one_seed_for_the_run(tmp_path, monkeypatch):
    from curated_loader.curation.plan import SEED_ENV

    for var in ("PL_GLOBAL_SEED", SEED_ENV, "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    cfg = train_script._with_output_dir(compose("seed=null", "curation=noise_filter", tmp=tmp_path))
    cfg = validate(cfg)
    assert isinstance(cfg.seed, int) and cfg.curation.seed == cfg.data.seed == cfg.seed
    assert instantiate(cfg.curation, _convert_="all").seed == cfg.seed


def test_untyped_node_checked_against_its_target(tmp_path):
    """A node without a schema of its own (e.g. from a user's YAML) is checked against the
    schema of its ``_target_``."""
    cfg = compose("curation=noise_filter", tmp=tmp_path)
    with open_dict(cfg):
        cfg.curation.noise_filter = OmegaConf.create({"_target_": "curated_loader.curation.GMMFilter", "taux": 0.3})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == "curation.noise_filter.taux"
    assert "GMMFilterConfig" in str(info.value)
    with open_dict(cfg):
        cfg.curation.noise_filter = OmegaConf.create({"_target_": "curated_loader.curation.AUMFilter", "quantile": 1.5})
    with pytest.raises(ConfigError, match=r"^curation\.noise_filter\.quantile: must be in"):
        validate(cfg)
