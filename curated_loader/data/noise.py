"""Label noise injection, for experiments where the true noise mask must be known."""

from __future__ import annotations

from typing import Literal

import numpy as np

NoiseKind = Literal["symmetric", "pairflip"]


def inject_label_noise(
    labels: np.ndarray, rate: float, *, num_classes: int, kind: NoiseKind = "symmetric", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt a ``rate`` fraction of labels; return ``(noisy_labels, noise_mask)``.

    ``symmetric``: each chosen label becomes a uniformly drawn *different* class.
    ``pairflip``: each chosen label ``c`` becomes ``(c + 1) % num_classes`` (asymmetric noise).
    Exactly ``round(rate * n)`` labels change, chosen with ``np.random.default_rng(seed)``.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate must lie in [0, 1), got {rate}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    if kind == "symmetric":
        shift = rng.integers(1, num_classes, size=len(chosen))
        noisy[chosen] = (labels[chosen] + shift) % num_classes
    elif kind == "pairflip":
        noisy[chosen] = (labels[chosen] + 1) % num_classes
    else:
        raise ValueError(f"noise kind must be 'symmetric' or 'pairflip', got {kind!r}")
    mask = np.zeros(len(labels), dtype=bool)
    mask[chosen] = True
    return noisy, mask
