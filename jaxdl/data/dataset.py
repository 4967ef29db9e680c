"""The one in-memory format every source returns, and the errors sources raise.

Keeping every source behind the same uint8 NHWC container means the input pipeline, the
splitters and the reports never need to know where the pixels came from; the `name` and
`real` fields are there so that a number measured on generated data can never be
mistaken for a number on the real data set, and `classes` names what each label means,
so a model's head, a confusion matrix and a report take the class count and names from
the data rather than assuming ten digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))  # the classes of the digit sources (SVHN, MNIST, ...)
NUM_CLASSES = len(DIGITS)  # the digit sources' class count; a Dataset's own is `len(ds.classes)`


class DataUnavailable(RuntimeError):
    """The data set is neither on disk nor downloadable (offline, host down, not prepared).

    The message is one line that says which files to put into which directory, because
    that is the only thing the user can do about it.
    """


class DataCorrupt(RuntimeError):
    """A file is present but is not the official file (wrong md5, truncated, wrong layout)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels of one split, and what the labels mean.

    images:  uint8, (N, H, W, C) -- NHWC because that is what Flax convolutions take.
    labels:  int32, (N,), values 0..len(classes)-1 (SVHN's label 10 is already mapped to 0).
    name:    exactly what the data is, e.g. "svhn" or "synthetic-svhn (generated, NOT real SVHN)".
    real:    False for generated data, so reports can refuse to call it SVHN or MNIST.
    classes: the name of each label, at least 2, distinct; the digit sources' default "0".."9".
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    real: bool
    classes: tuple[str, ...] = DIGITS

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int32 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int32 of shape ({self.images.shape[0]},), got {self.labels.dtype} {self.labels.shape}"
            )
        if isinstance(self.classes, str) or not all(isinstance(c, str) for c in self.classes):
            raise ValueError(f"classes must be a sequence of class names (str), got {self.classes!r:.200}")
        object.__setattr__(self, "classes", tuple(self.classes))  # a list in, a tuple kept: hashable, immutable
        n = len(self.classes)
        if n < 2:
            raise ValueError(f"a classification data set needs at least 2 classes, got {n}: {self.classes!r:.200}")
        if len(set(self.classes)) != n:
            repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"class names must be distinct, {repeated!r:.200} repeat")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= n):
            raise ValueError(f"labels must lie in 0..{n - 1} (one per class name), got "
                             f"{self.labels.min()}..{self.labels.max()}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def take(self, indices: np.ndarray, note: str) -> Dataset:
        """Rows `indices` as a new Dataset whose name records how it was derived (same classes)."""
        return Dataset(self.images[indices], self.labels[indices], f"{self.name} [{note}]", self.real, self.classes)
