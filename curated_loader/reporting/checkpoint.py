"""Curation state out of a Lightning checkpoint: the ledger, the latest decision, the history.

Lightning keeps a callback's ``state_dict`` under ``ckpt["callbacks"][callback.state_key]``;
for :class:`~curated_loader.CurationCallback` that key starts with ``"CurationCallback"``
and the state holds ``ledger``, ``decision``, ``plan`` and ``history``. The data module's
state sits under its class's qualified name (``ckpt["CuratedDataModule"]``).

A file holding a bare ``CurationCallback.state_dict()`` (saved with ``torch.save``) is read
as well — such as ``curation_state.pt``, which the callback writes into the trainer's log dir
when fit ends (the end of training, whichever checkpoints were kept). Tensors are loaded onto
the CPU, by default with ``weights_only=True`` (no arbitrary unpickling), which reads the
checkpoints Lightning writes for plain modules.

Provenance: the state records its training shards' fingerprints (``shards``, see
:mod:`curated_loader.data.fingerprint`). :func:`load_for_shards` refuses shards given in
another order or with other content, naming the first shard that differs.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..curation.decision import Decision
from ..curation.ledger import Ledger, LedgerStats
from ..data.fingerprint import ShardFingerprint, changes, first_mismatch, with_members
from ..data.shards import ShardIndex, ShardSpec, load_index

CALLBACK_PREFIX = "CurationCallback"


class CheckpointError(ValueError):
    """A checkpoint without usable curation state, or one that does not fit the shards."""


@dataclass(frozen=True)
class CurationState:
    """What a checkpoint says about curation, on the CPU.

    ``ledger`` is restored from the checkpoint (pending records folded in when
    :meth:`stats` is called); ``decision`` is the latest decision, or ``None`` when the
    checkpoint was written before the first epoch ended.
    """

    path: str
    state_key: str
    ledger: Ledger
    decision: Decision | None
    history: list[dict[str, float]]
    plan: dict[str, Any]
    datamodule: dict[str, Any] | None = None
    shards: list[ShardFingerprint] | None = None
    policies: dict[str, Any] = field(default_factory=dict)
    trainer_epoch: int | None = None
    global_step: int | None = None
    _stats: list[LedgerStats] = field(default_factory=list, repr=False, compare=False)

    @property
    def num_samples(self) -> int:
        return self.ledger.num_samples

    def stats(self) -> LedgerStats:
        """The ledger's derived per-sample statistics (computed once)."""
        if not self._stats:
            self._stats.append(self.ledger.stats(sync=True))
        return self._stats[0]

    def decision_or_neutral(self) -> Decision:
        """The latest decision, or the neutral keep-everything decision when there is none."""
        if self.decision is not None:
            return self.decision
        return Decision.keep_all(self.num_samples, epoch=self.ledger.epoch)

    def check_shards(self, index: ShardIndex, shards: Any = None) -> None:
        """Raise :class:`CheckpointError` unless ``index`` holds as many samples as the ledger
        and, where the state recorded its shards, the same shards in the same order."""
        if index.num_samples != self.num_samples:
            where = f" {shards}" if shards is not None and not isinstance(shards, ShardIndex) else ""
            raise CheckpointError(
                f"shards{where} hold {index.num_samples} samples but the ledger in checkpoint {self.path} "
                f"has {self.num_samples}: pass the training shards the checkpoint was made with"
            )
        if self.shards is None:
            warnings.warn(f"checkpoint {self.path} records no shard fingerprints (an older version wrote it): "
                          "the shards are assumed to be the training shards, in training order", stacklevel=3)
            return
        given = [index.fingerprint(s) for s in range(index.num_shards)]
        if any(fp.members is not None for fp in self.shards):
            given = with_members(given)
        problem = first_mismatch(self.shards, given)
        if problem is not None:
            raise CheckpointError(f"{problem}: these are not the shards checkpoint {self.path} was trained on, "
                                  "in training order (sample ids would point at other samples)")
        edited = [(fp.url, changes(fp)) for fp, now in zip(self.shards, given) if fp.url == now.url]
        edited = [(url, why) for url, why in edited if why is not None]
        if edited:
            url, why = edited[0]
            warnings.warn(f"training shard {url} {why} since checkpoint {self.path} recorded it; its member "
                          "list is unchanged, so sample ids still line up, but member bytes may differ",
                          stacklevel=3)


def _torch_load(path: str, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exn:
        if weights_only:
            raise CheckpointError(
                f"checkpoint {path} holds objects that weights_only loading refuses ({exn}); "
                "if you trust the file, load it with weights_only=False (CLI: --trusted)"
            ) from exn
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({exn})") from exn
    except Exception as exn:  # noqa: BLE001 - unpickling junk can fail in many ways
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({exn})") from exn


def find_curation_state(ckpt: Any, path: str = "<checkpoint>", state_key: str | None = None) -> tuple[str, dict]:
    """``(state_key, state)`` of the curation callback in a loaded checkpoint dict."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"no CurationCallback state in ckpt {path}: it holds a {type(ckpt).__name__}, not a checkpoint dict")
    if "ledger" in ckpt:  # a bare CurationCallback.state_dict()
        return state_key or CALLBACK_PREFIX, ckpt
    callbacks = ckpt.get("callbacks")
    if not isinstance(callbacks, dict):
        raise CheckpointError(f"no CurationCallback state in ckpt {path} (it has no callback states)")
    if state_key is not None:
        if state_key not in callbacks:
            raise CheckpointError(f"no callback state {state_key!r} in ckpt {path} (it has {sorted(callbacks)})")
        candidates = {state_key: callbacks[state_key]}
    else:
        candidates = {
            k: v for k, v in callbacks.items()
            if isinstance(v, dict) and "ledger" in v and (str(k).startswith(CALLBACK_PREFIX) or "decision" in v)
        }
        if not candidates:
            empty = [k for k in callbacks if str(k).startswith(CALLBACK_PREFIX)]
            hint = " (the callback had no ledger yet when it was saved)" if empty else ""
            raise CheckpointError(f"no CurationCallback state in ckpt {path}{hint}")
        if len(candidates) > 1:
            raise CheckpointError(
                f"ckpt {path} holds several curation states ({sorted(candidates)}): pass state_key to choose one"
            )
    key, state = next(iter(candidates.items()))
    if not isinstance(state, dict) or not state.get("ledger"):
        raise CheckpointError(f"no CurationCallback state in ckpt {path} (callback {key!r} saved no ledger)")
    return key, state


def _restore_ledger(state: dict, path: str) -> Ledger:
    ledger_state = state["ledger"]
    try:
        ledger = Ledger(int(ledger_state["num_samples"]), ledger_state.get("num_classes"), device="cpu",
                        ema=float(ledger_state.get("ema", 0.9)))
        ledger.load_state_dict(ledger_state)
    except (KeyError, ValueError, TypeError, RuntimeError) as exn:
        raise CheckpointError(f"the ledger state in ckpt {path} is unreadable: {exn}") from exn
    return ledger


def curation_state_from_dict(ckpt: Any, path: str = "<checkpoint>", state_key: str | None = None) -> CurationState:
    """A :class:`CurationState` from an already loaded checkpoint dict."""
    key, state = find_curation_state(ckpt, path, state_key)
    ledger = _restore_ledger(state, path)
    decision = None
    if state.get("decision") is not None:
        try:
            decision = Decision.from_state_dict(state["decision"]).to("cpu")
        except (KeyError, TypeError) as exn:
            raise CheckpointError(f"the decision state in ckpt {path} is unreadable: {exn}") from exn
        if decision.num_samples != ledger.num_samples:
            raise CheckpointError(
                f"ckpt {path}: the decision covers {decision.num_samples} samples, the ledger {ledger.num_samples}"
            )
    datamodule = None
    if isinstance(ckpt, dict):
        for name, value in ckpt.items():
            if isinstance(name, str) and name.endswith("DataModule") and isinstance(value, dict):
                datamodule = value
                break
    return CurationState(
        path=path,
        state_key=key,
        ledger=ledger,
        decision=decision,
        history=[dict(h) for h in state.get("history") or []],
        plan=dict(state.get("plan") or {}),
        datamodule=datamodule,
        shards=_recorded_shards(state, path),
        policies=dict(state.get("policies") or {}),
        trainer_epoch=ckpt.get("epoch") if "ledger" not in ckpt else ckpt.get("trainer_epoch"),
        global_step=ckpt.get("global_step"),
    )


def _recorded_shards(state: dict, path: str) -> list[ShardFingerprint] | None:
    if state.get("shards") is None:
        return None
    try:
        return [ShardFingerprint.from_dict(entry) for entry in state["shards"]]
    except (KeyError, TypeError, ValueError) as exn:
        raise CheckpointError(f"the shard record in ckpt {path} is unreadable: {exn}") from exn


def load_curation_state(
    checkpoint: str | os.PathLike,
    *,
    state_key: str | None = None,
    weights_only: bool = True,
) -> CurationState:
    """Read the curation state out of a Lightning checkpoint file.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a file
    that is no checkpoint or holds no ``CurationCallback`` state.
    """
    path = os.fspath(checkpoint)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return curation_state_from_dict(_torch_load(path, weights_only), path, state_key)


def load_for_shards(
    checkpoint: str | os.PathLike,
    shards: ShardSpec | ShardIndex,
    *,
    state_key: str | None = None,
    weights_only: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[CurationState, ShardIndex]:
    """The checkpoint's curation state and the shards' index, checked to hold as many
    samples as the ledger."""
    state = load_curation_state(checkpoint, state_key=state_key, weights_only=weights_only)
    index = load_index(shards, cache_dir=cache_dir)
    state.check_shards(index, shards)
    return state, index
