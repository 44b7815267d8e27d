"""Reporting: noise-detection metrics and the logger / W&B panels of a curated run.

``CurationMonitor`` is a Lightning callback (``wandb`` is imported only when a
``WandbLogger`` is attached); ``detection_metrics`` is the pure function behind its
``curation/detect_*`` metrics.
"""

from .detection import DETECTION_KEYS, detection_metrics, flagged_of, load_noise_mask
from .monitor import TABLE_COLUMNS, CurationMonitor, find_curation_callback, signal_plot

__all__ = [
    "DETECTION_KEYS",
    "TABLE_COLUMNS",
    "CurationMonitor",
    "detection_metrics",
    "find_curation_callback",
    "flagged_of",
    "load_noise_mask",
    "signal_plot",
]
