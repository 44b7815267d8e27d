"""What a run records about itself beside the ledger: its training shards' fingerprints and
its policies' settings (plain values, so the state loads with ``weights_only=True``), and the
final curation state written at fit end."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from ..curation import CurationPlan
from ..data.fingerprint import with_members
from ..data.shards import ShardIndex

FINAL_STATE = "curation_state.pt"
STATE_KIND = "curation-state-v1"


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def policy_record(policy: Any) -> dict[str, Any] | None:
    """``{"class": name, field: value, ...}`` of a policy dataclass (``None`` stays ``None``)."""
    if policy is None:
        return None
    fields = {f.name: _plain(getattr(policy, f.name)) for f in dataclasses.fields(policy)}
    return {"class": type(policy).__name__, **fields}


def plan_record(plan: CurationPlan) -> dict[str, Any]:
    """Every policy of ``plan`` with its settings, as plain values."""
    return {
        "noise_filters": [policy_record(f) for f in plan.noise_filters],
        "prune": policy_record(plan.prune),
        "reweight": policy_record(plan.reweight),
        "augment": policy_record(plan.augment),
    }


def shard_record(index: ShardIndex) -> list[dict[str, Any]]:
    """The fingerprint of every training shard, in id order (member digests of local shards
    the index does not describe are computed by a header scan)."""
    return [fp.to_dict() for fp in with_members([index.fingerprint(s) for s in range(index.num_shards)])]


def run_record(plan: CurationPlan, index: ShardIndex) -> dict[str, Any]:
    """``{"shards": ..., "policies": ...}``: added to the callback's state."""
    return {"shards": shard_record(index), "policies": plan_record(plan)}


def _on_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def save_final_state(path: str | os.PathLike, state: dict[str, Any], *, epoch: int, global_step: int) -> Path:
    """Write a callback state (tensors moved to the CPU) plus the trainer's epoch and step to
    ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    record = {**state, "__kind__": STATE_KIND, "trainer_epoch": int(epoch), "global_step": int(global_step)}
    torch.save(_on_cpu(record), tmp)
    os.replace(tmp, path)
    return path
