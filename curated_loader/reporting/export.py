"""Export the curated dataset: new shards without the removed samples, plus a manifest.

``export_curated(checkpoint, shards, out_dir, drop="flagged")`` writes into ``out_dir``:

* ``{prefix}-000000.tar, ...`` — every sample that stays, in the source order, its members'
  bytes copied exactly as they are in the source shards (never decoded or re-encoded). Each
  member is named ``<key>.<suffix>`` (the suffix as the loader sees it, lower-case); tar
  metadata members (``__*__``) are not copied. By default each source shard gives one
  output shard (an emptied source shard gives none); ``samples_per_shard`` packs instead.
* ``{prefix}-index.json`` — the wids shard index of the new shards;
* ``manifest.jsonl`` — one JSON line per sample removed or reweighted, in id order: ``id``,
  source ``shard``, ``key``, ``decision``, ``reason`` (the latest decision's reason code),
  ``score``, ``epoch`` (the epoch that decision was made for), ``weight`` and ``label``
  (the given label the ledger recorded). ``decision`` is ``"removed"`` (not exported),
  ``"reweighted"`` (exported; the decision gave it a loss weight other than 1) or
  ``"pruned"`` (exported with ``drop="flagged"``; the decision skipped it for one epoch,
  weight 0). Exported entries also carry ``out_shard`` and ``out_id``, their place in the
  export;
* ``export.json`` — the counts and settings of the export.

``drop="flagged"`` removes the samples a noise filter flagged as likely mislabeled;
``drop="pruned"`` also removes those pruning skipped in the latest decision. The source
shards are only read. Kept + removed must equal the source's sample count and every written
shard is re-scanned to hold what was written, or :class:`ExportError` is raised.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.shards import ShardIndex, ShardSpec
from ..data.tario import local_path, scan_layout, stream_samples
from .checkpoint import load_for_shards
from .summary import flagged_mask, pruned_mask, reason_name

Drop = Literal["flagged", "pruned"]
DROP_CHOICES = ("flagged", "pruned")
MANIFEST = "manifest.jsonl"
_WEIGHT_TOL = 1e-6


class ExportError(RuntimeError):
    """The export could not be written as promised (counts do not reconcile, a shard
    changed, the output would overwrite something)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_curated` wrote, and its reconciled counts."""

    out_dir: Path
    index_path: Path
    manifest_path: Path
    shards: list[str]
    drop: str
    decision_epoch: int
    num_source: int
    num_kept: int
    num_removed: int
    num_reweighted: int
    num_pruned_kept: int = 0
    removed_by_reason: dict[str, int] = field(default_factory=dict)
    label_mismatches: int = 0

    def describe(self) -> str:
        """One line: ``kept + removed = source`` with the removal reasons."""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.removed_by_reason.items())) or "none"
        return (f"{self.num_kept} kept + {self.num_removed} removed = {self.num_source} samples "
                f"(removed: {reasons}; kept: {self.num_reweighted} reweighted, {self.num_pruned_kept} pruned "
                f"in the last decision) → "
                f"{len(self.shards)} shards, index {self.index_path}")


def removal_mask(reason: torch.Tensor, drop: str) -> torch.Tensor:
    """bool[N]: samples an export with ``drop`` removes."""
    if drop not in DROP_CHOICES:
        raise ValueError(f"drop must be one of {DROP_CHOICES}, got {drop!r}")
    mask = flagged_mask(reason)
    if drop == "pruned":
        mask |= pruned_mask(reason)
    return mask


class _ShardSink:
    """Writes samples into ``{prefix}-%06d.tar`` files, member bytes as given."""

    def __init__(self, out: Path, prefix: str) -> None:
        self.out, self.prefix = out, prefix
        self.urls: list[str] = []
        self.counts: list[int] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._last_key: str | None = None

    @property
    def current(self) -> Path:
        return self.out / f"{self.prefix}-{len(self.urls) - 1:06d}.tar"

    @property
    def next_id(self) -> int:
        return int(sum(self.counts))

    def new_shard(self) -> None:
        self.close_shard()
        self.urls.append(str(self.out / f"{self.prefix}-{len(self.urls):06d}.tar"))
        self.counts.append(0)
        self._tmp = Path(self.urls[-1] + ".partial")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.GNU_FORMAT)
        self._last_key = None

    def write(self, key: str, members: list[tuple[str, bytes]]) -> None:
        if self._tar is None or key == self._last_key:
            # a sample with the previous sample's key would merge with it on reading
            self.new_shard()
        for suffix, data in members:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self.counts[-1] += 1
        self._last_key = key

    def close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self.urls[-1])
            self._tar, self._tmp = None, None

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)
            self._tar, self._tmp = None, None


def _members(sample: dict) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in sample.items() if not k.startswith("__")]


def _check_out_dir(out: Path, prefix: str, index: ShardIndex, shards: Any, overwrite: bool) -> None:
    sources = {os.path.realpath(p) for p in (local_path(u) for u in index.urls) if p is not None}
    if isinstance(shards, (str, os.PathLike)) and os.fspath(shards).endswith(".json"):
        sources.add(os.path.realpath(shards))
    if os.path.realpath(out / f"{prefix}-index.json") in sources:
        raise ExportError(f"{out / f'{prefix}-index.json'} is the source index: export into another folder or use another prefix")
    existing = sorted(out.glob(f"{prefix}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))
    clash = [p for p in existing if os.path.realpath(p) in sources]
    if clash:
        raise ExportError(f"{out} holds the source shard {clash[0]}: export into another folder (sources are never modified)")
    taken = existing + [p for p in (out / f"{prefix}-index.json", out / MANIFEST) if p.exists()]
    if taken and not overwrite:
        raise ExportError(f"{out} already holds an export ({taken[0].name}); choose another folder or pass overwrite=True")
    for path in existing:
        path.unlink()


def export_curated(
    checkpoint: str | os.PathLike,
    shards: ShardSpec | ShardIndex,
    out_dir: str | os.PathLike,
    drop: Drop = "flagged",
    *,
    prefix: str = "train",
    samples_per_shard: int | None = None,
    overwrite: bool = False,
    state_key: str | None = None,
    weights_only: bool = True,
    progress: bool = True,
) -> ExportResult:
    """Write the samples the latest curation decision keeps as new shards (see the module
    docstring). ``shards`` are the training shards the checkpoint was made with.

    Raises ``FileNotFoundError`` for a missing checkpoint,
    :class:`~curated_loader.reporting.checkpoint.CheckpointError` for a checkpoint without
    curation state or shards that do not hold the ledger's number of samples,
    :class:`~curated_loader.data.errors.ShardError` for an unreadable shard and :class:`ExportError`
    when the counts do not reconcile.
    """
    if drop not in DROP_CHOICES:
        raise ValueError(f"drop must be one of {DROP_CHOICES}, got {drop!r}")
    if samples_per_shard is not None and samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    state, index = load_for_shards(checkpoint, shards, state_key=state_key, weights_only=weights_only)
    if state.decision is None:
        warnings.warn(f"checkpoint {state.path} holds no curation decision yet: nothing is removed", stacklevel=2)
    decision = state.decision_or_neutral()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_out_dir(out, prefix, index, shards, overwrite)

    n = index.num_samples
    remove = removal_mask(decision.reason, drop).numpy()
    weight = decision.weight.double().numpy()
    reason = decision.reason.long().numpy()
    score = decision.score.double().numpy()
    labels = state.ledger.table("label").long().numpy()
    pruned_kept = ~remove & pruned_mask(decision.reason).numpy()
    reweighted = ~remove & ~pruned_kept & (np.abs(weight - 1.0) > _WEIGHT_TOL)

    sink = _ShardSink(out, prefix)
    manifest_path = out / MANIFEST
    manifest_tmp = out / (MANIFEST + ".partial")
    manifest = open(manifest_tmp, "w")
    removed_by_reason: dict[str, int] = {}
    kept = removed = mismatches = 0
    try:
        with tqdm(total=n, desc="exporting", unit="sample", disable=not progress) as bar:
            for s, url in enumerate(index.urls):
                lo, count = int(index.offsets[s]), int(index.counts[s])
                if samples_per_shard is None and sink.counts and sink.counts[-1]:
                    sink.close_shard()
                positions = 0
                for sample in stream_samples(url, lambda pos: True):
                    pos = sample["__pos__"]
                    if pos >= count:
                        raise ExportError(f"{url} holds more samples than the {count} its index lists: rebuild the index")
                    sid, key = lo + pos, sample["__key__"]
                    positions += 1
                    entry = None
                    if remove[sid]:
                        removed += 1
                        name = reason_name(reason[sid])
                        removed_by_reason[name] = removed_by_reason.get(name, 0) + 1
                        entry = {"decision": "removed"}
                    else:
                        if samples_per_shard is not None and sink.counts and sink.counts[-1] >= samples_per_shard:
                            sink.new_shard()
                        new_id = sink.next_id
                        sink.write(key, _members(sample))
                        kept += 1
                        if reweighted[sid] or pruned_kept[sid]:
                            entry = {"decision": "reweighted" if reweighted[sid] else "pruned",
                                     "out_shard": os.path.basename(sink.urls[-1]), "out_id": new_id}
                        given = labels[sid]
                        if given >= 0 and "cls" in sample:
                            try:
                                mismatches += int(int(sample["cls"].decode().strip()) != given)
                            except (ValueError, UnicodeDecodeError):
                                pass
                    if entry is not None:
                        manifest.write(json.dumps({
                            "id": int(sid), "shard": url, "key": key, "decision": entry.pop("decision"),
                            "reason": reason_name(reason[sid]), "score": float(score[sid]),
                            "epoch": int(decision.epoch), "weight": float(weight[sid]),
                            "label": int(labels[sid]) if labels[sid] >= 0 else None, **entry,
                        }) + "\n")
                    bar.update(1)
                if positions != count:
                    raise ExportError(f"{url} holds {positions} samples but its index lists {count}: rebuild the index")
        sink.close_shard()
        manifest.close()
    except BaseException:
        sink.abort()
        manifest.close()
        manifest_tmp.unlink(missing_ok=True)
        raise

    if kept + removed != n or removed != int(remove.sum()):
        raise ExportError(f"counts do not reconcile: {kept} kept + {removed} removed != {n} source samples")
    sizes = []
    for url, written in zip(sink.urls, sink.counts):
        layout = scan_layout(url)
        if layout.nsamples != written:
            raise ExportError(f"{url}: wrote {written} samples but the shard reads back as {layout.nsamples}")
        sizes.append(os.path.getsize(url))
    if sum(sink.counts) != kept:
        raise ExportError(f"the new shards hold {sum(sink.counts)} samples, {kept} were kept")
    if mismatches:
        warnings.warn(f"{mismatches} exported samples have a shard label (cls) other than the label the ledger "
                      "recorded: were these the training shards, or does a transform remap labels?", stacklevel=2)

    new_index = ShardIndex(list(sink.urls), np.asarray(sink.counts, np.int64), sizes)
    index_path = out / f"{prefix}-index.json"
    new_index.save(index_path)
    os.replace(manifest_tmp, manifest_path)

    result = ExportResult(
        out_dir=out, index_path=index_path, manifest_path=manifest_path, shards=list(sink.urls), drop=drop,
        decision_epoch=int(decision.epoch), num_source=n, num_kept=kept, num_removed=removed,
        num_reweighted=int(reweighted.sum()), num_pruned_kept=int(pruned_kept.sum()),
        removed_by_reason=removed_by_reason, label_mismatches=mismatches,
    )
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    record.update(checkpoint=state.path, source_shards=list(index.urls), state_key=state.state_key)
    (out / "export.json").write_text(json.dumps(record, indent=1))
    return result


__all__ = ["DROP_CHOICES", "Drop", "ExportError", "ExportResult", "export_curated", "removal_mask"]
