"""Lightning integration: the data module, the curation callback and the loss reducer."""

from .datamodule import BatchContext, CuratedDataModule

__all__ = ["BatchContext", "CuratedDataModule"]
