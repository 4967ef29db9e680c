"""Stratified subsets and validation splits, via scikit-learn's splitter.

Stratifying keeps every class at its original share, which matters for the small subsets
(e.g. SVHN's 25% used in the course reports): a plain random subset of a skewed set such
as SVHN (about 19% ones) shifts the class balance and so the accuracy being compared.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from .dataset import Dataset


def _check_fraction(name: str, value: float, *, allow_one: bool) -> None:
    if not (0.0 < value < 1.0 or (allow_one and value == 1.0)):
        raise ValueError(f"{name} must lie in (0, 1{']' if allow_one else ')'}, got {value!r}")


def stratified_subset(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """round(fraction * len) rows with the class proportions of `ds`; fraction 1 returns `ds` itself."""
    _check_fraction("fraction", fraction, allow_one=True)
    if fraction == 1.0:
        return ds
    keep, _ = train_test_split(np.arange(len(ds)), train_size=fraction, stratify=ds.labels, random_state=seed)
    return ds.take(np.sort(keep), f"{fraction:g} stratified subset, seed {seed}")


def train_val_split(ds: Dataset, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Disjoint (train, val) with the class proportions of `ds` in both."""
    _check_fraction("val_fraction", val_fraction, allow_one=False)
    train, val = train_test_split(np.arange(len(ds)), test_size=val_fraction, stratify=ds.labels, random_state=seed)
    return (ds.take(np.sort(train), f"train part, val_fraction {val_fraction:g}, seed {seed}"),
            ds.take(np.sort(val), f"val part, val_fraction {val_fraction:g}, seed {seed}"))
