"""Label noise injection, for experiments where the true noise mask must be known."""

from __future__ import annotations

from typing import Literal

import numpy as np

NoiseKind = Literal["symmetric", "pairflip", "instance"]
NOISE_KINDS: tuple[str, ...] = ("symmetric", "pairflip", "instance")


def weak_model_probs(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities of a deliberately weak model: a nearest-class-mean classifier on the
    flattened ``features`` (softmax of minus the squared distance to each class mean, scaled by
    the median squared distance of a sample to its own class mean). Shape [n, num_classes]."""
    x = np.asarray(features, dtype=np.float64).reshape(len(labels), -1)
    means = np.stack([x[labels == c].mean(0) if np.any(labels == c) else np.zeros(x.shape[1])
                      for c in range(num_classes)])
    sq = (x * x).sum(1, keepdims=True) - 2 * x @ means.T + (means * means).sum(1)[None, :]
    scale = max(float(np.median(sq[np.arange(len(labels)), labels])), 1e-12)
    logits = -sq / scale
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def inject_label_noise(
    labels: np.ndarray,
    rate: float,
    *,
    num_classes: int,
    kind: NoiseKind = "symmetric",
    seed: int = 0,
    features: np.ndarray | None = None,
    probs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt a ``rate`` fraction of labels; return ``(noisy_labels, noise_mask)``.

    ``symmetric``: each chosen label becomes a uniformly drawn *different* class.
    ``pairflip``: each chosen label ``c`` becomes ``(c + 1) % num_classes`` (asymmetric noise).
    ``instance``: instance-dependent noise toward a weak model's confusions: ``probs`` [n, C]
    are that model's class probabilities (default: :func:`weak_model_probs` of ``features``).
    Samples are chosen with probability proportional to the mass the model puts on wrong
    classes (ambiguous samples are flipped more often), and each becomes a wrong class drawn
    in proportion to the model's probabilities.
    Exactly ``round(rate * n)`` labels change, chosen with ``np.random.default_rng(seed)``.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate must lie in [0, 1), got {rate}")
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    size = int(round(rate * len(labels)))
    noisy = labels.copy()
    if kind == "instance":
        if probs is None:
            if features is None or len(features) != len(labels):
                raise ValueError("instance-dependent noise needs `probs` or `features` with one row per label")
            probs = weak_model_probs(features, labels, num_classes)
        if np.shape(probs) != (len(labels), num_classes):
            raise ValueError(f"probs must have shape {(len(labels), num_classes)}, got {np.shape(probs)}")
        wrong = np.array(probs, dtype=np.float64)
        wrong[np.arange(len(labels)), labels] = 0.0
        mass = wrong.sum(1) + 1e-12
        chosen = rng.choice(len(labels), size=size, replace=False, p=mass / mass.sum())
        cdf = np.cumsum(wrong[chosen] / mass[chosen, None], 1)
        draw = rng.random(len(chosen))[:, None]
        noisy[chosen] = np.minimum((cdf < draw).sum(1), num_classes - 1)
        noisy[chosen] = np.where(noisy[chosen] == labels[chosen], (labels[chosen] + 1) % num_classes, noisy[chosen])
    else:
        chosen = rng.choice(len(labels), size=size, replace=False)
        if kind == "symmetric":
            shift = rng.integers(1, num_classes, size=len(chosen))
            noisy[chosen] = (labels[chosen] + shift) % num_classes
        else:
            noisy[chosen] = (labels[chosen] + 1) % num_classes
    mask = np.zeros(len(labels), dtype=bool)
    mask[chosen] = True
    return noisy, mask
