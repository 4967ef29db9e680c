"""MNIST from the official IDX gz files, with torchvision's mirrors and md5s."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .dataset import DataCorrupt, Dataset
from .download import cache_dir, ensure_files

# torchvision.datasets.MNIST.mirrors / .resources (torchvision 0.29).
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
FILES = {
    "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
    "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
}
_UBYTE = 0x08


def directory(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else cache_dir() / "mnist"


def is_cached(data_dir: str | Path | None = None) -> bool:
    """Whether all four files are on disk (not verified: a cheap check for `resolve`)."""
    return all((directory(data_dir) / name).is_file() for pair in FILES.values() for name, _ in pair)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes: magic 0x0000_08_<ndim>, big-endian int32 dims, data."""
    hint = f"delete it and download it again from {MIRRORS[0]}"
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataCorrupt(f"{path} is not a readable gzip file ({type(e).__name__}: {e}): {hint}") from e
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, _UBYTE, ndim]):
        raise DataCorrupt(f"{path} is not an IDX file of {ndim}-d unsigned bytes: {hint}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise DataCorrupt(f"{path} holds {data.size} bytes of data, its header promises {shape}: {hint}")
    return data.reshape(shape)


def load_mnist(split: str = "train", *, data_dir: str | None = None, download: bool = True) -> Dataset:
    """Split "train" (60,000) or "test" (10,000) as (N, 28, 28, 1) uint8."""
    if split not in FILES:
        raise ValueError(f"mnist split must be one of {sorted(FILES)}, got {split!r}")
    (images_name, images_md5), (labels_name, labels_md5) = FILES[split]
    paths = ensure_files({images_name: images_md5, labels_name: labels_md5}, MIRRORS,
                         directory(data_dir), download=download, what="mnist")
    images = read_idx(paths[images_name], 3)
    labels = read_idx(paths[labels_name], 1)
    if images.shape[0] != labels.shape[0] or labels.max(initial=0) > 9:
        raise DataCorrupt(f"{paths[images_name]} and {paths[labels_name]} do not match (count or labels)")
    return Dataset(images[..., None].copy(), labels.astype(np.int32), "mnist", real=True)
