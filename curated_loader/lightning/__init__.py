"""Lightning integration: the data module, the curation callback and the loss reducer."""

from .callback import CurationCallback, epoch_metrics
from .datamodule import BatchContext, CuratedDataModule
from .loss import curated_loss

__all__ = ["BatchContext", "CuratedDataModule", "CurationCallback", "curated_loss", "epoch_metrics"]
