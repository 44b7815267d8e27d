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
  (``curation/hist/strength``, when any strength is set), a ``wandb.Table`` of the
  ``top_k`` most suspicious samples (``curation/suspicious``: id, shard, key, given and
  predicted label, score, reason, preview) and, when the data module has an augmentation
  (``trainer.datamodule.augment``), a ``wandb.Table`` of a few training samples before and
  after it, each at its snapshot strength (``curation/augment_previews``: a line plot of
  raw and augmented for 1-D signals, the two side by side for images; see
  :meth:`CurationMonitor.augment_preview_rows`). Other loggers skip these.

The per-epoch mean strength of kept samples (``curation/strength_mean``) comes from the
callback's scalars, through any logger.

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

__all__ = [
    "AUGMENT_PREVIEW_COLUMNS", "TABLE_COLUMNS", "CurationMonitor", "augment_preview_plot", "find_curation_callback",
    "preview_ids", "signal_plot",
]

#: Columns of the suspicious-sample table.
TABLE_COLUMNS = (
    "epoch", "id", "shard", "key", "given_label", "predicted_label", "score", "reason", "flagged", "true_noise", "preview",
)

#: Columns of the augmentation-preview table. ``for_epoch`` is the epoch whose augmentation
#: is shown (the one the snapshot's strengths are for); ``rel_change`` is
#: ``||augmented - raw|| / ||raw||``; ``path`` is ``"worker"`` or ``"device"``.
AUGMENT_PREVIEW_COLUMNS = ("epoch", "for_epoch", "id", "strength", "rel_change", "path", "preview")


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


def augment_preview_plot(
    raw: Any, augmented: Any, title: str = "", size: tuple[float, float] = (3.6, 1.5), dpi: int = 96
) -> np.ndarray:
    """A 1-D signal before (grey) and after (orange) augmentation in one line plot: uint8
    RGB ``[H, W, 3]``. Multi-channel signals (``[C, L]``) draw one line per channel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for values, color, width, label in ((raw, "0.55", 1.6, "raw"), (augmented, "tab:orange", 1.1, "augmented")):
        arr = np.asarray(values, dtype=np.float32)
        for i, row in enumerate(arr.reshape(-1, arr.shape[-1])):
            ax.plot(row, color=color, linewidth=width, label=label if i == 0 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, loc="upper right", frameon=False)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.2)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _is_image(arr: np.ndarray) -> bool:
    if arr.ndim == 3:
        return True
    return arr.ndim == 2 and min(arr.shape) > 4


def _hwc(arr: np.ndarray) -> np.ndarray:
    """An image array as HW or HWC (CHW moved, a single channel dropped)."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _side_by_side(raw: np.ndarray, augmented: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two images (HW, HWC or CHW) as one uint8 image, raw left, augmented right. Float
    images are read as [0, 1] when the raw one lies in it, else as [0, 255]; both are clipped
    on the same scale, so the augmented one is never rescaled on its own."""
    raw, augmented = _hwc(raw), _hwc(augmented)
    unit = np.issubdtype(raw.dtype, np.floating) and float(np.nanmax(raw)) <= 1.0

    def to_uint8(arr: np.ndarray) -> np.ndarray:
        arr = arr.astype(np.float32) * (255.0 if unit and np.issubdtype(arr.dtype, np.floating) else 1.0)
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1) if arr.ndim == 2 else arr[..., :3] if arr.shape[-1] == 4 else arr

    left, right = to_uint8(raw), to_uint8(augmented)
    if left.shape[-1] != right.shape[-1]:  # grey beside colour
        left, right = (np.repeat(a[..., :1], 3, axis=-1) if a.shape[-1] == 1 else a for a in (left, right))
    height = max(left.shape[0], right.shape[0])
    pad = [np.full((height - a.shape[0], a.shape[1], a.shape[2]), 255, np.uint8) for a in (left, right)]
    left, right = np.concatenate([left, pad[0]]), np.concatenate([right, pad[1]])
    return np.concatenate([left, np.full((height, gap, left.shape[2]), 255, np.uint8), right], axis=1)


def _augment_preview(raw: Any, augmented: Any, caption: str) -> Any:
    """``wandb.Image`` of an image and its augmented version side by side, or of a 1-D signal
    and its augmented version in one line plot."""
    import wandb

    a, b = _as_array(raw), _as_array(augmented)
    if _is_image(a) and _is_image(b):
        return wandb.Image(_side_by_side(a, b), caption=f"{caption} (raw | augmented)")
    return wandb.Image(augment_preview_plot(a, b, caption), caption=caption)


def _relative_change(raw: Any, augmented: Any) -> float | None:
    """``||augmented - raw|| / ||raw||`` (``||augmented - raw||`` when raw is all zero)."""
    try:
        a = torch.as_tensor(_as_array(raw), dtype=torch.float64)
        b = torch.as_tensor(_as_array(augmented), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None
    if a.shape != b.shape:
        return None
    diff, norm = float((b - a).norm()), float(a.norm())
    return diff / norm if norm > 0 else diff


def preview_ids(strength: torch.Tensor, keep: torch.Tensor | None, num: int) -> list[int]:
    """``num`` sample ids spread evenly over the strength ranking of the kept samples,
    weakest first (ties by id); just the strongest when ``num == 1``."""
    strength = strength.detach().float().cpu().reshape(-1)
    candidates = keep.detach().cpu().reshape(-1).nonzero().flatten() if keep is not None else None
    if candidates is None or candidates.numel() == 0:
        candidates = torch.arange(strength.numel())
    if num <= 0 or candidates.numel() == 0:
        return []
    ranked = candidates[torch.sort(strength[candidates], stable=True).indices]
    m, k = ranked.numel(), min(num, ranked.numel())
    positions = [m - 1] if k == 1 else torch.linspace(0, m - 1, k).round().long().unique().tolist()
    return [int(ranked[p]) for p in positions]


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
        arr = _hwc(arr)
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
        augment_previews: training samples shown before and after the data module's
            augmentation each epoch, under W&B (0: none; nothing is logged when the data
            module has no augmentation).
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
        augment_previews: int = 4,
    ) -> None:
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        if augment_previews < 0:
            raise ValueError(f"augment_previews must be >= 0, got {augment_previews}")
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
        self.augment_previews = int(augment_previews)
        self.history: list[dict[str, float]] = []
        self.tables_logged = 0
        self._warned_sharded = False
        self.previews_logged = 0

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
        if decision.owner_local:  # a sharded ledger: reasons, scores and stats cover one rank's ids
            if not self._warned_sharded:
                rank_zero_warn("CurationMonitor: nothing logged with a sharded ledger (per-sample panels need "
                               "every id's statistics on one rank); use ledger_mode='dense'")
                self._warned_sharded = True
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
        if self.augment_previews > 0:
            previews = self._augment_table(wandb, trainer)
            if previews is not None:
                payload["curation/augment_previews"] = previews
                self.previews_logged += 1
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

    # -- augmentation previews ---------------------------------------------------------
    def augment_preview_rows(self, trainer: L.Trainer, num: int | None = None) -> list[dict[str, Any]]:
        """A few training samples before and after the data module's augmentation.

        Each sample is read from its shard (``MemberReader``), decoded and transformed as the
        loader does, then augmented at its strength in the data module's snapshot — the
        decision just published, for epoch ``for_epoch`` — with that epoch's seed: the
        per-sample hook ``augment(sample, strength)`` for ``augment_on="worker"``,
        :func:`~curated_loader.augment.augment_batch` for ``"device"``. So the augmented value
        is what the next epoch trains on (its first repeat). The ``num`` samples (default
        ``augment_previews``) are kept ones spread evenly over the strength ranking
        (:func:`preview_ids`). Rows hold :data:`AUGMENT_PREVIEW_COLUMNS` but ``preview``,
        plus ``raw`` and ``augmented`` (the augmented field's values). Empty without an
        augmentation; a sample that cannot be read is skipped with a warning.
        """
        from ..augment import augment_batch
        from ..data.tario import MemberReader

        num = self.augment_previews if num is None else int(num)
        dm = getattr(trainer, "datamodule", None)
        aug = getattr(dm, "augment", None)
        if num <= 0 or aug is None or not hasattr(dm, "train_stream"):
            return []
        stream = dm.train_stream
        snapshot = dm.snapshot
        epoch = int(trainer.current_epoch)
        for_epoch = snapshot.version if snapshot.version >= 0 else epoch + 1
        on_device = getattr(dm, "augment_on", "worker") == "device"
        field = getattr(aug, "field", None)
        ids = preview_ids(snapshot.strength, snapshot.keep, num)
        if not ids:
            return []
        index = stream.index
        shards, positions = index.locate(np.asarray(ids, dtype=np.int64))
        rows: list[dict[str, Any]] = []
        reader = MemberReader()
        try:
            for sid, shard, pos in zip(ids, shards.tolist(), positions.tolist()):
                strength = float(snapshot.strength[sid])
                url = index.urls[shard]
                try:
                    sample = stream.decoder(reader.read(url, index.layout(shard), pos))
                    for key, value in sample.items():  # as the loader hands samples on
                        if isinstance(value, np.ndarray) and value.dtype != object:
                            sample[key] = torch.from_numpy(value)
                    sample.update(__id__=sid, __epoch__=for_epoch, __seed__=stream.seed, __repeat__=0,
                                  __weight__=float(snapshot.weight[sid]), __strength__=strength)
                    if stream.transform is not None:
                        sample = stream.transform(sample)
                    if on_device:
                        alts = stream.fields[dm.fields.index(field)]
                        raw = _first_present(sample, alts)
                        x = torch.as_tensor(raw).unsqueeze(0)
                        augmented = augment_batch(aug, x, strength, torch.tensor([sid]), for_epoch, dm.seed)[0]
                    else:
                        alts = (field,) if field is not None and field in sample else (
                            (self.preview_field,) if self.preview_field else stream.fields[0])
                        raw = _first_present(sample, alts)
                        augmented = _first_present(aug(dict(sample), strength), alts) if strength > 0 else raw
                    if raw is None:
                        raise KeyError(f"no field {alts} to preview")
                except Exception as exn:  # a remote or unreadable shard, a failing augmentation
                    rank_zero_warn(f"CurationMonitor: no augmentation preview of sample {sid} ({url}): {exn}")
                    continue
                rows.append({
                    "epoch": epoch, "for_epoch": int(for_epoch), "id": int(sid), "strength": strength,
                    "rel_change": _relative_change(raw, augmented), "path": "device" if on_device else "worker",
                    "raw": raw, "augmented": augmented,
                })
        finally:
            reader.close()
        return rows

    def _augment_table(self, wandb: Any, trainer: L.Trainer) -> Any:
        data = []
        for row in self.augment_preview_rows(trainer):
            caption = f"id {row['id']} strength {row['strength']:.2f}"
            try:
                image = _augment_preview(row["raw"], row["augmented"], caption)
            except Exception as exn:
                rank_zero_warn(f"CurationMonitor: cannot draw the augmentation preview of sample {row['id']}: {exn}")
                image = None
            data.append([row[c] for c in AUGMENT_PREVIEW_COLUMNS[:-1]] + [image])
        return wandb.Table(columns=list(AUGMENT_PREVIEW_COLUMNS), data=data) if data else None

    # -- checkpoints -------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "tables_logged": self.tables_logged, "previews_logged": self.previews_logged}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.tables_logged = int(state_dict.get("tables_logged", 0))
        self.previews_logged = int(state_dict.get("previews_logged", 0))


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
