"""Train a classifier on curated WebDataset shards, configured with Hydra.

    python examples/train.py                                         # MNIST-1D, 40% noise, no curation
    python examples/train.py curation=noise_filter                   # GMM noise filter
    python examples/train.py curation=infobatch curation.prune.ratio=0.5
    python examples/train.py curation=noise_filter curation/noise_filter=aum
    python examples/train.py experiment=mnist1d_noisy logger=wandb   # the demo's setting, W&B
    python examples/train.py -m curation=none,noise_filter           # a sweep
    python examples/train.py --cfg job                               # print the composed config

``train(cfg)`` is a plain function (tests and ``examples/demo.py`` call it); ``main()`` is the
thin Hydra entry point around it. When the configured MNIST-1D shards do not exist yet,
``train`` writes them first (see :func:`ensure_shards`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from curated_loader.config import ConfigError, validate
from curated_loader.curation.plan import resolve_seed
from curated_loader.reporting import flagged_of, load_noise_mask

log = logging.getLogger("curated_loader.train")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


# -- configuration helpers ---------------------------------------------------------------------
def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line style ``overrides`` (what
    ``python examples/train.py <overrides>`` would run), outside ``@hydra.main``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _with_output_dir(cfg: DictConfig) -> DictConfig:
    cfg = cfg.copy()
    if cfg.seed is None:  # one seed for the run, drawn and logged once; ${seed} users all see it
        cfg.seed = resolve_seed(None)
    if cfg.paths.output_dir is None:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        cfg.paths.output_dir = str(Path("outputs") / str(cfg.task_name) / stamp)
    return cfg


def ensure_shards(dataset: DictConfig) -> Path | None:
    """Make the configured dataset's shards when they are missing; return their folder.

    Only ``dataset.name: mnist1d_noisy`` is made here (MNIST-1D generated locally, label
    noise injected, the true noise mask beside the shards). The shards are written to a
    temporary folder and renamed into place, so concurrent runs (DDP ranks, sweeps) never
    read half-written shards. An existing folder must hold the configured dataset.
    """
    if dataset.name is None:
        return None
    target = Path(dataset.dir)
    meta_path = target / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        expected = {"noise_rate": float(dataset.noise_rate), "noise_kind": dataset.noise_kind, "seed": int(dataset.seed)}
        found = {k: meta.get(k) for k in expected}
        total = int(meta.get("num_train", 0)) + int(meta.get("num_test", 0))
        if found != expected or total != int(dataset.num_samples):
            raise ConfigError(
                "dataset.dir", f"{target} holds {dict(found, num_samples=total)}, the config asks for "
                f"{dict(expected, num_samples=int(dataset.num_samples))}: choose another dataset.dir"
            )
        return target
    if not dataset.make_if_missing:
        raise ConfigError("dataset.dir", f"{target} holds no shards (set dataset.make_if_missing=true to make them)")
    from curated_loader.datasets import write_noisy_mnist1d

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent.resolve() / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("making MNIST-1D shards with %.0f%% %s label noise in %s", 100 * dataset.noise_rate, dataset.noise_kind, target)
    write_noisy_mnist1d(
        tmp, num_samples=int(dataset.num_samples), noise_rate=float(dataset.noise_rate), noise_kind=dataset.noise_kind,
        seed=int(dataset.seed), samples_per_shard=int(dataset.samples_per_shard), progress=False,
    )
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not meta_path.exists():  # not a concurrent maker that won the race
            raise
    return target


# -- per-epoch record ---------------------------------------------------------------------------
class EpochRecorder(Callback):
    """Per training epoch: validation metrics (validation runs before this hook) and the
    cumulative number of sample passes recorded by the curation ledger."""

    def __init__(self, curation_callback: Any) -> None:
        self.curation = curation_callback
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: dict[str, float] = {"epoch": float(trainer.current_epoch)}
        for key in ("val/acc", "val/loss", "train/loss"):
            if key in metrics:
                row[key.replace("/", "_")] = float(metrics[key])
        if self.curation.ledger is not None:
            row["sample_passes"] = float(self.curation.ledger.table("count").sum())
        if self.curation.history:
            row["kept_frac_next"] = self.curation.history[-1].get("curation/kept_frac", math.nan)
        self.epochs.append(row)


def _check_augment_pairing(cfg: DictConfig) -> None:
    has_policy = cfg.curation.get("augment") is not None
    has_augment = cfg.get("augment") is not None
    if has_policy and not has_augment:
        warnings.warn("curation.augment sets per-sample strengths but no augment is configured (augment=none): "
                      "choose one, e.g. augment=signal_default", stacklevel=2)
    if has_augment and not has_policy:
        warnings.warn("augment is configured but the curation plan sets no strength (curation.augment is null): "
                      "every strength is 0, the identity; use curation=adaptive_augment or full", stacklevel=2)


def _wandb_run_dir(logger: Any) -> str | None:
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover
        return None
    if isinstance(logger, WandbLogger):
        return str(Path(logger.experiment.dir).parent)
    return None


# -- the training function ----------------------------------------------------------------------
def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Fit and test one configuration (``callbacks`` are added to the trainer's); return its
    final metrics.

    Returns a dict with ``test_acc`` / ``test_loss`` (final weights, when the data has test
    shards), ``epochs`` (per epoch: validation accuracy and loss, train loss, cumulative
    ``sample_passes``), ``curation_history`` (the callback's ``curation/*`` metrics per
    epoch), ``detection`` and ``detection_history`` (noise-detection metrics when a noise
    mask is configured), ``tables_logged`` (W&B suspicious-sample tables), ``sample_passes`` (samples trained on, all epochs), ``fit_time_s``,
    ``output_dir``, ``wandb_run_dir`` (with the W&B logger) and ``per_sample`` (numpy
    arrays of the final ledger and decision: ``ema_loss``, ``aum``, ``seen``, ``flagged``,
    ``keep``, ``score``, ``reason``, ``noise_mask``). Everything but ``per_sample`` is also
    written to ``<output_dir>/metrics.json``.
    """
    cfg = validate(_with_output_dir(cfg))  # resolved copy; ConfigError names the bad key
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    _check_augment_pairing(cfg)
    ensure_shards(cfg.dataset)

    noise_mask = None
    if cfg.dataset.noise_mask:
        if not Path(cfg.dataset.noise_mask).exists():
            raise ConfigError("dataset.noise_mask", f"{cfg.dataset.noise_mask} does not exist")
        noise_mask = load_noise_mask(cfg.dataset.noise_mask)

    dm = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    plan = instantiate(cfg.curation, _convert_="all")
    curation = instantiate(cfg.callback, plan=plan)
    monitor = instantiate(cfg.monitor, noise_mask=noise_mask)
    recorder = EpochRecorder(curation)
    logger = instantiate(cfg.logger, _convert_="all") if cfg.logger is not None else False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[curation, monitor, recorder, *callbacks], logger=logger, _convert_="all")
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    wandb_dir = _wandb_run_dir(logger) if trainer.is_global_zero else None

    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_time = time.perf_counter() - start
    tested: dict[str, float] = {}
    if cfg.test_after_fit and cfg.data.get("test_shards"):
        results = trainer.test(model, datamodule=dm, verbose=False)
        tested = {k.replace("/", "_"): float(v) for k, v in (results[0] if results else {}).items()}

    result = _result(cfg, trainer, curation, monitor, recorder, noise_mask, fit_time, tested, wandb_dir)
    if wandb_dir is not None:
        logger.experiment.finish()
    if trainer.is_global_zero:
        summary = {k: v for k, v in result.items() if k != "per_sample"}
        (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _result(cfg, trainer, curation, monitor, recorder, noise_mask, fit_time, tested, wandb_dir) -> dict[str, Any]:
    ledger, decision = curation.ledger, curation.decision
    per_sample: dict[str, np.ndarray] = {}
    if ledger is not None:
        stats = ledger.stats(sync=False)
        per_sample = {
            "ema_loss": stats.ema_loss.cpu().numpy(), "aum": stats.aum.cpu().numpy(),
            "seen": stats.seen.cpu().numpy(), "labels": stats.labels.cpu().numpy(),
        }
    if decision is not None:
        per_sample.update(
            flagged=flagged_of(decision.reason).cpu().numpy(), keep=decision.keep.cpu().numpy(),
            score=decision.score.cpu().numpy(), reason=decision.reason.cpu().numpy(),
        )
    if noise_mask is not None:
        per_sample["noise_mask"] = noise_mask.numpy()
    return {
        "test_acc": tested.get("test_acc"),
        "test_loss": tested.get("test_loss"),
        "epochs": recorder.epochs,
        "curation_history": curation.history,
        "detection": monitor.last_detection,
        "detection_history": monitor.history,
        "tables_logged": monitor.tables_logged,
        "sample_passes": int(ledger.table("count").sum()) if ledger is not None else 0,
        "num_train_samples": int(ledger.num_samples) if ledger is not None else 0,
        "epochs_run": int(trainer.current_epoch),
        "global_rank": int(trainer.global_rank),
        "fit_time_s": fit_time,
        "output_dir": str(cfg.paths.output_dir),
        "wandb_run_dir": wandb_dir,
        "per_sample": per_sample,
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """``python examples/train.py [overrides]``: ``train(cfg)`` in Hydra's run directory."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.paths.output_dir is None:
        cfg.paths.output_dir = HydraConfig.get().runtime.output_dir
    try:
        result = train(cfg)
    except ConfigError as exn:  # a clear one-line message instead of a traceback
        raise SystemExit(f"configuration error: {exn}") from None
    if torch.distributed.is_initialized():  # before exit: gloo's threads may still hold gathered tensors
        torch.distributed.destroy_process_group()
    if result["global_rank"] != 0:
        return result["test_acc"]
    lines = [f"output: {result['output_dir']}"]
    if result["test_acc"] is not None:
        lines.append(f"test accuracy: {result['test_acc']:.4f}")
    if result["detection"] is not None:
        d = result["detection"]
        if d["filter_active"]:
            lines.append(f"noise detection: precision {d['precision']:.3f} recall {d['recall']:.3f} auroc {d['auroc']:.3f}")
        else:
            lines.append(f"noise detection: no noise filter acted; auroc of the EMA loss {d['auroc']:.3f}")
    lines.append(f"sample passes: {result['sample_passes']}")
    if result["wandb_run_dir"]:
        lines.append(f"W&B run: {result['wandb_run_dir']}  (offline? upload with: wandb sync {result['wandb_run_dir']})")
    print("\n".join(lines))
    return result["test_acc"]


if __name__ == "__main__":
    main()
