"""The one in-memory format every source returns, and the errors sources raise.

Keeping every source behind the same uint8 NHWC container means the input pipeline, the
splitters and the reports never need to know where the pixels came from; the `name` and
`real` fields are there so that a number measured on generated data can never be
mistaken for a number on the real data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10


class DataUnavailable(RuntimeError):
    """The data set is neither on disk nor downloadable (offline, host down, not prepared).

    The message is one line that says which files to put into which directory, because
    that is the only thing the user can do about it.
    """


class DataCorrupt(RuntimeError):
    """A file is present but is not the official file (wrong md5, truncated, wrong layout)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and digit labels of one split.

    images: uint8, (N, H, W, C) -- NHWC because that is what Flax convolutions take.
    labels: int32, (N,), values 0..9 (SVHN's label 10 is already mapped to 0).
    name:   exactly what the data is, e.g. "svhn" or "synthetic-svhn (generated, NOT real SVHN)".
    real:   False for generated data, so reports can refuse to call it SVHN or MNIST.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    real: bool

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int32 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int32 of shape ({self.images.shape[0]},), got {self.labels.dtype} {self.labels.shape}"
            )
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= NUM_CLASSES):
            raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def take(self, indices: np.ndarray, note: str) -> Dataset:
        """Rows `indices` as a new Dataset whose name records how it was derived."""
        return Dataset(self.images[indices], self.labels[indices], f"{self.name} [{note}]", self.real)
