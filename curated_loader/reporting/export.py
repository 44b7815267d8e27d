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

The output folder belongs to the export: it must be new, empty, or hold an earlier export
(``export.json``; replaced only with ``overwrite=True``). Everything is written into a folder
beside it and swapped in at the end (:mod:`.staging`), so a failure or a kill at any point
leaves the earlier content whole. ``prefix`` must be a plain file name. Member names that are
absolute, contain a ``..`` component or a backslash are refused (:class:`ExportError` naming
shard and key), never rewritten: a renamed member could collide with another.

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

from ..data.fingerprint import fingerprint_shard
from ..data.shards import ShardIndex, ShardSpec, cache_folder
from ..data.tario import local_path, scan_layout, stream_samples
from .checkpoint import CurationState, load_for_shards
from .staging import staged_folder
from .summary import flagged_mask, pruned_mask, reason_name

Drop = Literal["flagged", "pruned"]
DROP_CHOICES = ("flagged", "pruned")
MANIFEST = "manifest.jsonl"
RECORD = "export.json"
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
    """Writes samples into ``{prefix}-%06d.tar`` files in one folder, member bytes as given."""

    def __init__(self, out: Path, prefix: str) -> None:
        self.out, self.prefix = out, prefix
        self.urls: list[str] = []
        self.counts: list[int] = []
        self._tar: tarfile.TarFile | None = None
        self._last_key: str | None = None

    @property
    def next_id(self) -> int:
        return int(sum(self.counts))

    def new_shard(self) -> None:
        self.close_shard()
        self.urls.append(str(self.out / f"{self.prefix}-{len(self.urls):06d}.tar"))
        self.counts.append(0)
        self._tar = tarfile.open(self.urls[-1], "w", format=tarfile.GNU_FORMAT)
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
            tar, self._tar = self._tar, None
            tar.close()


def _members(sample: dict) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in sample.items() if not k.startswith("__")]


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a plain file-name stem, else :class:`ExportError` (shards are
    always written inside the output folder)."""
    if not prefix or prefix in (".", "..") or any(c in prefix for c in ("/", "\\", "\0", os.sep)):
        raise ExportError(f"prefix {prefix!r} is not a plain file name (no '/', '\\' or '..'): "
                          "the export writes only inside its output folder")
    return prefix


def unsafe_member_name(name: str) -> str | None:
    """Why a tar member name could write outside an extraction folder (absolute, a ``..``
    component, a backslash), or ``None`` when it is safe."""
    if name.startswith("/"):
        return "is absolute"
    if "\\" in name:
        return "contains a backslash"
    if ".." in name.split("/"):
        return "contains a '..' component"
    return None


def _safe_members(sample: dict, url: str) -> list[tuple[str, bytes]]:
    """The sample's members, or :class:`ExportError` for a name that is not safe to extract."""
    members = _members(sample)
    for suffix, _ in members:
        name = f"{sample['__key__']}.{suffix}"
        problem = unsafe_member_name(name)
        if problem is not None:
            raise ExportError(f"{url} (sample {sample['__key__']!r}): member name {name!r} {problem}; "
                              "export refuses names that would write outside an extraction folder "
                              "(rename the samples in the source shard)")
    return members


def _check_destination(out: Path, index: ShardIndex, shards: Any, overwrite: bool) -> None:
    """Refuse an ``out`` that holds the sources, or content that is not an earlier export,
    or an earlier export without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    sources = [os.path.realpath(p) for p in (local_path(u) for u in index.urls) if p is not None]
    if isinstance(shards, (str, os.PathLike)) and os.fspath(shards).endswith(".json"):
        sources.append(os.path.realpath(shards))
    root = os.path.realpath(out)
    inside = [p for p in sources if p == root or p.startswith(root + os.sep)]
    if inside:
        raise ExportError(f"{out} holds the source shard {inside[0]}: export into another folder (sources are never modified)")
    content = sorted(out.iterdir()) if out.exists() else []
    if not content:
        return
    if not (out / RECORD).exists():
        raise ExportError(f"{out} is not empty and holds no earlier export ({RECORD}): export into a new or empty folder")
    if not overwrite:
        raise ExportError(f"{out} already holds an export ({RECORD}); choose another folder or pass overwrite=True (CLI: --overwrite)")


def _os_error_text(exn: OSError) -> str:
    where = f": {exn.filename}" if exn.filename else ""
    return f"{exn.strerror or exn}{where}"


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
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ExportResult:
    """Write the samples the latest curation decision keeps as new shards (see the module
    docstring). ``shards`` are the training shards the checkpoint was made with; their index
    is cached in ``cache_dir`` (default :func:`~curated_loader.data.shards.cache_folder`),
    never beside the sources.

    The export is built in a folder beside ``out_dir`` and swapped in when complete: until
    then ``out_dir`` (and an earlier export in it) stays as it was, whatever fails.

    Raises ``FileNotFoundError`` for a missing checkpoint,
    :class:`~curated_loader.reporting.checkpoint.CheckpointError` for a checkpoint without
    curation state or shards that are not the ones it was trained on,
    :class:`~curated_loader.data.errors.ShardError` for an unreadable shard and :class:`ExportError`
    for a bad prefix or output folder, an unsafe member name, a failed write (disk full,
    read-only) or counts that do not reconcile.
    """
    if drop not in DROP_CHOICES:
        raise ValueError(f"drop must be one of {DROP_CHOICES}, got {drop!r}")
    if samples_per_shard is not None and samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    check_prefix(prefix)
    state, index = load_for_shards(checkpoint, shards, state_key=state_key, weights_only=weights_only,
                                   cache_dir=cache_folder() if cache_dir is None else cache_dir)
    if state.decision is None:
        warnings.warn(f"checkpoint {state.path} holds no curation decision yet: nothing is removed", stacklevel=2)
    out = Path(out_dir).absolute()
    _check_destination(out, index, shards, overwrite)
    try:
        with staged_folder(out) as staged:
            result = _write_export(state, index, staged, out, drop, prefix, samples_per_shard, progress)
    except OSError as exn:
        raise ExportError(f"writing the export failed ({_os_error_text(exn)}); {out} is unchanged") from exn
    return result


def _write_export(
    state: CurationState, index: ShardIndex, staged: Path, out: Path, drop: str, prefix: str,
    samples_per_shard: int | None, progress: bool,
) -> ExportResult:
    """Write shards, manifest, index and record into ``staged``; paths in the result and the
    record name their place in ``out``, where ``staged`` is about to be swapped in."""
    decision = state.decision_or_neutral()
    n = index.num_samples
    remove = removal_mask(decision.reason, drop).numpy()
    weight = decision.weight.double().numpy()
    reason = decision.reason.long().numpy()
    score = decision.score.double().numpy()
    labels = state.ledger.table("label").long().numpy()
    pruned_kept = ~remove & pruned_mask(decision.reason).numpy()
    reweighted = ~remove & ~pruned_kept & (np.abs(weight - 1.0) > _WEIGHT_TOL)

    sink = _ShardSink(staged, prefix)
    removed_by_reason: dict[str, int] = {}
    kept = removed = mismatches = 0
    with open(staged / MANIFEST, "w") as manifest, \
            tqdm(total=n, desc="exporting", unit="sample", disable=not progress) as bar:
        try:
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
                        members = _safe_members(sample, url)
                        if samples_per_shard is not None and sink.counts and sink.counts[-1] >= samples_per_shard:
                            sink.new_shard()
                        new_id = sink.next_id
                        sink.write(key, members)
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
        finally:
            sink.close_shard()

    if kept + removed != n or removed != int(remove.sum()):
        raise ExportError(f"counts do not reconcile: {kept} kept + {removed} removed != {n} source samples")
    fingerprints = []
    for url, written in zip(sink.urls, sink.counts):
        layout = scan_layout(url)
        if layout.nsamples != written:
            raise ExportError(f"{url}: wrote {written} samples but the shard reads back as {layout.nsamples}")
        fingerprints.append(fingerprint_shard(url, layout))
    if sum(sink.counts) != kept:
        raise ExportError(f"the new shards hold {sum(sink.counts)} samples, {kept} were kept")
    if mismatches:
        warnings.warn(f"{mismatches} exported samples have a shard label (cls) other than the label the ledger "
                      "recorded: were these the training shards, or does a transform remap labels?", stacklevel=3)

    ShardIndex(list(sink.urls), np.asarray(sink.counts, np.int64), [fp.size for fp in fingerprints],
               fingerprints).save(staged / f"{prefix}-index.json")
    result = ExportResult(
        out_dir=out, index_path=out / f"{prefix}-index.json", manifest_path=out / MANIFEST,
        shards=[str(out / os.path.basename(u)) for u in sink.urls], drop=drop,
        decision_epoch=int(decision.epoch), num_source=n, num_kept=kept, num_removed=removed,
        num_reweighted=int(reweighted.sum()), num_pruned_kept=int(pruned_kept.sum()),
        removed_by_reason=removed_by_reason, label_mismatches=mismatches,
    )
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    record.update(checkpoint=state.path, source_shards=list(index.urls), state_key=state.state_key)
    (staged / RECORD).write_text(json.dumps(record, indent=1))
    return result


__all__ = ["DROP_CHOICES", "Drop", "ExportError", "ExportResult", "check_prefix", "export_curated", "removal_mask",
           "unsafe_member_name"]
