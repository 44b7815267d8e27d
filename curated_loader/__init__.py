"""curated_loader: WebDataset streaming with on-the-fly data curation for PyTorch Lightning.

The public names below are imported on first use (PEP 562), so ``import curated_loader.data``
or the ``curated-loader`` command line does not pay for Lightning, W&B or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "ShardError": ".data.errors",
    "UnsafeURLError": ".data.errors",
    "CuratedLoader": ".data.pipeline",
    "CuratedStream": ".data.pipeline",
    "KeptSampler": ".data.sampler",
    "ShardDataset": ".data.sampler",
    "ShardIndex": ".data.shards",
    "build_index": ".data.shards",
    "expand_urls": ".data.shards",
    "load_index": ".data.shards",
    "CurationSnapshot": ".data.snapshot",
    "CurateStage": ".data.stage",
    "write_arrays": ".data.writer",
    "write_image_folder": ".data.writer",
    "write_samples": ".data.writer",
    "CurationCallback": ".lightning.callback",
    "CuratedDataModule": ".lightning.datamodule",
    "curated_loss": ".lightning.loss",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .data.errors import ShardError, UnsafeURLError
    from .data.pipeline import CuratedLoader, CuratedStream
    from .data.sampler import KeptSampler, ShardDataset
    from .data.shards import ShardIndex, build_index, expand_urls, load_index
    from .data.snapshot import CurationSnapshot
    from .data.stage import CurateStage
    from .data.writer import write_arrays, write_image_folder, write_samples
    from .lightning.callback import CurationCallback
    from .lightning.datamodule import CuratedDataModule
    from .lightning.loss import curated_loss


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
