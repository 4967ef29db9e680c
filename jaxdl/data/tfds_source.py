"""SVHN and MNIST through `tensorflow_datasets.data_source` (random access, no TensorFlow).

For users who already keep prepared tfds data sets. tensorflow-datasets is imported
lazily because it is an optional extra; its own downloader retries for minutes offline,
so reachability is probed before it is ever asked to download.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, DataUnavailable
from .download import reachable

# The host each builder downloads from (tfds' svhn_cropped and mnist builders).
HOSTS = {
    "svhn_cropped": "http://ufldl.stanford.edu/housenumbers/",
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
}
_ARRAY_RECORD = {"file_format": "array_record"}  # the random-access format data_source needs


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataUnavailable(f"tensorflow-datasets is not installed ({e}): pip install 'jaxdl[tfds]'") from e
    return tfds


def _open(tfds, name: str, split: str, data_dir: str | None, download: bool):
    """The tfds random-access source, preparing it only when the host is reachable."""
    where = f"prepare it with tfds.data_source({name!r}, builder_kwargs={_ARRAY_RECORD}) on a machine online"
    where += f" and copy it into {data_dir or '$TFDS_DATA_DIR (default ~/tensorflow_datasets)'}"
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False, builder_kwargs=_ARRAY_RECORD)
    except Exception as e:  # tfds raises KeyError, AssertionError, NotImplementedError... when not prepared
        reason = str(e).splitlines()[0][:200]
        if not download:
            raise DataUnavailable(f"tfds:{name} is not prepared ({reason}) and download=False: {where}") from e
    if not reachable([HOSTS[name]]):
        raise DataUnavailable(f"tfds:{name} is not prepared and the host of {HOSTS[name]} is unreachable: {where}")
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=True, builder_kwargs=_ARRAY_RECORD)
    except Exception as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataUnavailable(f"tfds:{name}: download_and_prepare failed ({reason}): {where}") from e


def load_tfds(name: str, split: str = "train", *, data_dir: str | None = None, download: bool = True) -> Dataset:
    """tfds' `svhn_cropped` or `mnist` split, decoded into a uint8 NHWC Dataset."""
    if name not in HOSTS:
        raise ValueError(f"tfds data set must be one of {sorted(HOSTS)}, got {name!r}")
    source = _open(_import_tfds(), name, split, data_dir, download)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
    labels = np.array([ex["label"] for ex in examples], np.int32)
    return Dataset(images, labels, f"tfds:{name}", real=True)
