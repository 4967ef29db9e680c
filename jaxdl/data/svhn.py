"""SVHN cropped digits (format 2) from the official `.mat` files.

The official files, not a re-packaged copy, so results compare with the literature and
with torchvision (which checks the same md5s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .dataset import DataCorrupt, Dataset
from .download import cache_dir, ensure_files

MIRRORS = ["http://ufldl.stanford.edu/housenumbers/"]
FILES = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "extra": ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
}


def directory(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else cache_dir() / "svhn"


def is_cached(data_dir: str | Path | None = None) -> bool:
    """Whether train and test are on disk (not verified: a cheap check for `resolve`)."""
    return all((directory(data_dir) / FILES[s][0]).is_file() for s in ("train", "test"))


def parse_mat(path: Path) -> Dataset:
    """Convert the (32, 32, 3, N) / (N, 1) MATLAB layout to NHWC with labels 0..9 (10 -> 0)."""
    hint = "delete it and download it again from " + MIRRORS[0]
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... on damaged files
        raise DataCorrupt(f"{path} is not a readable .mat file ({type(e).__name__}: {e}): {hint}") from e
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise DataCorrupt(f"{path} does not hold SVHN's X (32,32,3,N) and y (N,1): {hint}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.min() < 1 or labels.max() > 10:
        raise DataCorrupt(f"{path} has labels outside 1..10: {hint}")
    images = np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)), dtype=np.uint8)
    return Dataset(images, (labels % 10).astype(np.int32), "svhn", real=True)


def load_svhn(split: str = "train", *, data_dir: str | None = None, download: bool = True) -> Dataset:
    """Split "train" (73,257), "test" (26,032) or "extra" (531,131) of SVHN."""
    if split not in FILES:
        raise ValueError(f"svhn split must be one of {sorted(FILES)}, got {split!r}")
    name, md5 = FILES[split]
    paths = ensure_files({name: md5}, MIRRORS, directory(data_dir), download=download, what="svhn")
    return parse_mat(paths[name])
