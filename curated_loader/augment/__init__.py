"""Strength-aware, seed-reproducible augmentations.

Each augmentation works per sample in loader workers (``aug(sample, strength)``) and batched on
the training device (``aug.batch(x, strength, seeds)``); both paths draw identical parameters
for the same ``(seed, epoch, id, repeat)``. Strength 0 is the identity, 1 the configured maximum.
"""

from .base import Augmentation, SampleAugment, SeededAugment
from .common import GaussianNoise
from .compose import Compose, FromCallable, augment_batch
from .image import ColorJitter, HorizontalFlip, RandomErasing, RandomResizedCrop
from .seeding import Draws, draw_block, fold_in, mix64, normal, sample_seed, seed_of_sample, uniform
from .signal import AmplitudeScale, Shift, TimeStretch

__all__ = [
    "Augmentation",
    "SeededAugment",
    "SampleAugment",
    "Compose",
    "FromCallable",
    "augment_batch",
    "sample_seed",
    "fold_in",
    "seed_of_sample",
    "uniform",
    "normal",
    "mix64",
    "Draws",
    "draw_block",
    "GaussianNoise",
    "Shift",
    "AmplitudeScale",
    "TimeStretch",
    "RandomResizedCrop",
    "HorizontalFlip",
    "ColorJitter",
    "RandomErasing",
]
