"""The synthetic classification problems Q1 and Q2 are measured on."""

from __future__ import annotations

import numpy as np


def logistic_data(rng: np.random.Generator, n: int, d: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features (with a constant column for the bias) and labels drawn from a random softmax
    model, so the classes overlap and CE has a finite minimiser.  Features are float32 *values*, so the
    same arrays feed float32 training and float64 Hessians (which are then exact for these data)."""
    x = np.concatenate([rng.normal(size=(n, d - 1)), np.ones((n, 1))], 1).astype(np.float32)
    logits = x @ rng.normal(size=(d, classes))
    y = np.array([rng.choice(classes, p=np.exp(l - l.max()) / np.exp(l - l.max()).sum()) for l in logits])
    return x, y
