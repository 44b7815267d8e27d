"""``CurationMonitor``: what the curation decided, as logger panels.

The scalar ``curation/*`` metrics (kept fraction, flagged and pruned counts, weight and
strength statistics) come from :class:`~curated_loader.CurationCallback` itself. This
callback adds, after it, at every training epoch end:

* with a ground-truth noise mask (evaluation only): ``curation/detect_precision``,
  ``_recall``, ``_f1`` (once a noise filter acts), ``curation/detect_auroc`` of the
  decision's suspicion score and ``curation/detect_noisy_kept_frac`` — through any
  Lightning logger;
* with a :class:`~lightning.pytorch.loggers.WandbLogger` attached (``wandb`` is imported
  only then): histograms of the EMA loss and the AUM margin of kept vs flagged samples
  (``curation/hist/ema_loss_kept`` ...), the strength histogram of kept samples
  (``curation/hist/strength``, when any strength is set), and a ``wandb.Table`` of the
  ``top_k`` most suspicious samples (``curation/suspicious``: id, shard, key, given and
  predicted label, score, reason, preview). Other loggers skip these.

"Kept" in the histograms means *not flagged* (samples InfoBatch skips for one epoch
included): the comparison is between what the noise filter trusts and what it rejects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from ..curation.decision import Decision, Reason
from ..curation.ledger import LedgerStats
from .detection import detection_metrics, flagged_of, load_noise_mask

log = logging.getLogger("curated_loader")

__all__ = ["TABLE_COLUMNS", "CurationMonitor", "find_curation_callback", "signal_plot"]

#: Columns of the suspicious-sample table.
TABLE_COLUMNS = (
    "epoch", "id", "shard", "key", "given_label", "predicted_label", "score", "reason", "flagged", "true_noise", "preview",
)


def find_curation_callback(trainer: L.Trainer) -> Any:
    """The trainer's :class:`~curated_loader.CurationCallback` (the callback holding the
    ledger and the decision); raises when there is none."""
    from ..lightning.callback import CurationCallback

    for callback in trainer.callbacks:
        if isinstance(callback, CurationCallback):
            return callback
    raise RuntimeError("CurationMonitor needs a CurationCallback in Trainer(callbacks=[...])")


def _wandb_logger(trainer: L.Trainer) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger
    return None


def signal_plot(values: Any, title: str = "", size: tuple[float, float] = (3.2, 1.3), dpi: int = 72) -> np.ndarray:
    """A 1-D signal (``[L]`` or ``[C, L]``) drawn as a line plot: uint8 RGB ``[H, W, 3]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arr = np.asarray(values, dtype=np.float32)
    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for row in arr.reshape(-1, arr.shape[-1]):
        ax.plot(row, linewidth=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.2)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _is_image(arr: np.ndarray) -> bool:
    if arr.ndim == 3:
        return True
    return arr.ndim == 2 and min(arr.shape) > 4


def _preview(value: Any, caption: str) -> Any:
    """``wandb.Image`` of an image (PIL, HW, CHW or HWC) or of a 1-D signal's line plot."""
    import wandb

    if value is None:
        return None
    if hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
        return wandb.Image(value, caption=caption)
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.dtype == object or arr.size == 0:
        return None
    if _is_image(arr):
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if np.issubdtype(arr.dtype, np.floating):
            arr = (np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8) if arr.max() <= 1.0 else np.clip(arr, 0, 255).astype(np.uint8)
        return wandb.Image(arr, caption=caption)
    return wandb.Image(signal_plot(arr, caption), caption=caption)


def _first_present(sample: dict, alternatives: Sequence[str]) -> Any:
    for alt in alternatives:
        if alt in sample:
            return sample[alt]
    return None


class CurationMonitor(Callback):
    """Log noise-detection metrics and W&B curation panels after each curation decision.

    Put it after :class:`~curated_loader.CurationCallback` in ``Trainer(callbacks=[...])``
    (it moves itself there otherwise). Detection metrics per epoch are also kept in
    :attr:`history`.

    Args:
        noise_mask: bool[N] (tensor, array or ``.npy`` path) of the truly mislabeled
            training samples, for evaluation; ``None`` turns the detection metrics off.
        top_k: rows of the suspicious-sample table (0: no table).
        preview_field: the member suffix previewed in the table (default: the first field).
        log_histograms, log_table: switch the W&B extras.
        table_every_n_epochs: log the table every n epochs (and after the last epoch).
        histogram_bins: bins of the W&B histograms.
    """

    def __init__(
        self,
        noise_mask: torch.Tensor | np.ndarray | str | None = None,
        top_k: int = 20,
        preview_field: str | None = None,
        log_histograms: bool = True,
        log_table: bool = True,
        table_every_n_epochs: int = 1,
        histogram_bins: int = 64,
    ) -> None:
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        if table_every_n_epochs < 1:
            raise ValueError(f"table_every_n_epochs must be >= 1, got {table_every_n_epochs}")
        if isinstance(noise_mask, str):
            noise_mask = load_noise_mask(noise_mask)
        self.noise_mask = None if noise_mask is None else torch.as_tensor(np.asarray(noise_mask)).bool().reshape(-1)
        self.top_k = int(top_k)
        self.preview_field = preview_field
        self.log_histograms = log_histograms
        self.log_table = log_table
        self.table_every_n_epochs = int(table_every_n_epochs)
        self.histogram_bins = int(histogram_bins)
        self.history: list[dict[str, float]] = []
        self.tables_logged = 0

    @property
    def last_detection(self) -> dict[str, float] | None:
        """The latest epoch's detection metrics (``None`` without a noise mask)."""
        return self.history[-1] if self.history else None

    # -- hooks -------------------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        curation = find_curation_callback(trainer)
        callbacks = trainer.callbacks
        if callbacks.index(self) < callbacks.index(curation):
            callbacks.remove(self)
            callbacks.insert(callbacks.index(curation) + 1, self)
        dm = getattr(trainer, "datamodule", None)
        stream = getattr(dm, "train_stream", None) if dm is not None else None
        if self.noise_mask is not None and stream is not None and self.noise_mask.numel() != stream.num_samples:
            raise ValueError(
                f"the noise mask has {self.noise_mask.numel()} entries, the training shards hold {stream.num_samples} samples"
            )

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        curation = find_curation_callback(trainer)
        decision: Decision | None = curation.decision
        if decision is None or curation.ledger is None:
            return
        stats = curation.stats if curation.stats is not None else curation.ledger.stats(sync=False)
        flagged = flagged_of(decision.reason)
        if self.noise_mask is not None:
            self._log_detection(trainer, pl_module, curation, decision, stats, flagged)
        if trainer.is_global_zero:
            logger = _wandb_logger(trainer)
            if logger is not None:
                self._log_wandb(logger.experiment, trainer, pl_module, decision, stats, flagged)

    # -- detection (any logger) --------------------------------------------------------
    def _log_detection(self, trainer, pl_module, curation, decision, stats, flagged) -> None:
        mask = self.noise_mask.to(decision.keep.device)
        metrics = detection_metrics(flagged, mask, decision.score, valid=stats.seen, keep=decision.keep)
        filter_active = bool(curation.plan.active(decision.epoch)["noise_filter"])
        names = ["auroc", "noisy_kept_frac"] + (["precision", "recall", "f1"] if filter_active else [])
        logged = {f"curation/detect_{k}": metrics[k] for k in names if not math.isnan(metrics[k])}
        if logged:
            pl_module.log_dict(logged, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)
        self.history.append({"epoch": float(trainer.current_epoch), "filter_active": float(filter_active), **metrics})

    # -- W&B extras --------------------------------------------------------------------
    def _log_wandb(self, run: Any, trainer, pl_module, decision: Decision, stats: LedgerStats, flagged: torch.Tensor) -> None:
        import wandb

        payload: dict[str, Any] = {}
        if self.log_histograms:
            payload.update(self._histograms(wandb, decision, stats, flagged))
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if self.log_table and self.top_k > 0 and ((epoch + 1) % self.table_every_n_epochs == 0 or last):
            table = self._table(wandb, trainer, pl_module, decision, stats, flagged)
            if table is not None:
                payload["curation/suspicious"] = table
                self.tables_logged += 1
        if payload:
            payload["trainer/global_step"] = trainer.global_step
            run.log(payload)

    def _histograms(self, wandb: Any, decision: Decision, stats: LedgerStats, flagged: torch.Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values, judged in (("ema_loss", stats.ema_loss, stats.seen), ("aum", stats.aum, stats.has_logits)):
            if not bool(judged.any()):
                continue
            v = values.detach().float().cpu().numpy()
            j = judged.cpu().numpy()
            f = flagged.cpu().numpy()
            edges = np.histogram_bin_edges(v[j], bins=self.histogram_bins)
            for group, members in (("kept", j & ~f), ("flagged", j & f)):
                if members.any():
                    out[f"curation/hist/{name}_{group}"] = wandb.Histogram(np_histogram=np.histogram(v[members], bins=edges))
        strength = decision.strength[decision.keep]
        if strength.numel() and bool((strength > 0).any()):
            out["curation/hist/strength"] = wandb.Histogram(strength.cpu().numpy(), num_bins=self.histogram_bins)
        return out

    def suspicious_rows(
        self, trainer: L.Trainer, pl_module: L.LightningModule, decision: Decision, stats: LedgerStats, flagged: torch.Tensor
    ) -> list[dict[str, Any]]:
        """The ``top_k`` seen samples with the highest suspicion score, with provenance
        (shard url, key), labels, reason and the decoded preview value."""
        from ..data.tario import MemberReader

        score = torch.where(stats.seen, decision.score.float(), -math.inf)
        k = min(self.top_k, stats.num_seen)
        if k == 0:
            return []
        top = torch.topk(score, k).indices  # on the decision's device
        ids = top.cpu().numpy()
        dm = trainer.datamodule
        stream = dm.train_stream
        index = stream.index
        shards, positions = index.locate(ids)
        field_alts = stream.fields[0]
        preview_alts = (self.preview_field,) if self.preview_field else field_alts
        label_alts = stream.fields[1] if len(stream.fields) > 1 else ()
        labels = stats.labels[top].tolist()
        scores = decision.score[top].tolist()
        reasons = decision.reason[top].tolist()
        flags = flagged[top].tolist()
        truth = self.noise_mask[top.cpu()].tolist() if self.noise_mask is not None else [None] * k
        rows, inputs = [], []
        reader = MemberReader()
        try:
            for i, (sid, shard, pos) in enumerate(zip(ids.tolist(), shards.tolist(), positions.tolist())):
                url = index.urls[shard]
                key, preview, model_input, given = None, None, None, (labels[i] if labels[i] >= 0 else None)
                try:
                    layout = index.layout(shard)
                    key = layout.keys[pos]
                    sample = stream.decoder(reader.read(url, layout, pos))
                    preview = _first_present(sample, preview_alts)
                    if given is None and label_alts:
                        given = _as_int(_first_present(sample, label_alts))
                    sample.update(__id__=sid, __epoch__=trainer.current_epoch, __seed__=stream.seed, __weight__=1.0, __strength__=0.0)
                    if stream.transform is not None:
                        sample = stream.transform(sample)
                    model_input = _first_present(sample, field_alts)
                except Exception as exn:  # a remote or unreadable shard: provenance only
                    rank_zero_warn(f"CurationMonitor: no preview of sample {sid} ({url}): {exn}")
                rows.append({
                    "epoch": int(trainer.current_epoch), "id": int(sid), "shard": url, "key": key,
                    "given_label": given, "predicted_label": None, "score": float(scores[i]),
                    "reason": Reason(int(reasons[i])).name.lower(), "flagged": bool(flags[i]),
                    "true_noise": None if truth[i] is None else bool(truth[i]), "preview": preview,
                })
                inputs.append(model_input)
        finally:
            reader.close()
        for row, pred in zip(rows, _predict(pl_module, inputs)):
            row["predicted_label"] = pred
        return rows

    def _table(self, wandb: Any, trainer, pl_module, decision, stats, flagged) -> Any:
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_stream"):
            return None
        rows = self.suspicious_rows(trainer, pl_module, decision, stats, flagged)
        data = []
        for row in rows:
            caption = f"id {row['id']} label {row['given_label']} pred {row['predicted_label']}"
            try:
                image = _preview(row["preview"], caption)
            except Exception as exn:
                rank_zero_warn(f"CurationMonitor: cannot draw a preview of sample {row['id']}: {exn}")
                image = None
            data.append([row[c] for c in TABLE_COLUMNS[:-1]] + [image])
        return wandb.Table(columns=list(TABLE_COLUMNS), data=data)

    # -- checkpoints -------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "tables_logged": self.tables_logged}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.tables_logged = int(state_dict.get("tables_logged", 0))


def _as_int(value: Any) -> int | None:
    try:
        if isinstance(value, (bytes, str)):
            return int(value)
        return int(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None


@torch.no_grad()
def _predict(pl_module: L.LightningModule, inputs: list[Any]) -> list[int | None]:
    """The module's argmax prediction for each input (``None`` where it cannot run)."""
    if not inputs or any(x is None for x in inputs):
        return [None] * len(inputs)
    was_training = pl_module.training
    try:
        batch = torch.stack([torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x) for x in inputs])
        if batch.is_floating_point():
            batch = batch.float()
        pl_module.eval()
        out = pl_module(batch.to(pl_module.device))
        if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == len(inputs):
            return [int(p) for p in out.argmax(1).tolist()]
    except Exception as exn:  # a module whose forward takes something else: no prediction
        log.debug("CurationMonitor: no predictions for the suspicious samples: %s", exn)
    finally:
        pl_module.train(was_training)
    return [None] * len(inputs)
