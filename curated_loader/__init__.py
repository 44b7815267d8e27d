"""curated_loader: WebDataset streaming with on-the-fly data curation for PyTorch Lightning."""

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

__all__ = [
    "CuratedDataModule",
    "CuratedLoader",
    "CuratedStream",
    "CurateStage",
    "CurationCallback",
    "CurationSnapshot",
    "KeptSampler",
    "ShardError",
    "UnsafeURLError",
    "ShardDataset",
    "ShardIndex",
    "build_index",
    "curated_loss",
    "expand_urls",
    "load_index",
    "write_arrays",
    "write_image_folder",
    "write_samples",
]
