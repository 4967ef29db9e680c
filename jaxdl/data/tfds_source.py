"""Any image-classification data set of tensorflow-datasets, through `tfds.data_source` (random access, no
TensorFlow): the "tfds:NAME" source (`cifar10`, `cifar100`, `svhn_cropped`, `mnist`, `fashion_mnist`, `beans`,
"emnist/balanced", ...), with its class names from the data set's metadata (`features["label"].names`).

For users who already keep prepared tfds data sets. tensorflow-datasets is imported lazily because it is an
optional extra; its own downloader retries for minutes offline, so reachability is probed before it is ever
asked to download. A name tfds does not know, or a data set that is not image classification (an image and a
class label, as its supervised keys say), is refused in one line before anything is read or downloaded.
"""

from __future__ import annotations

import inspect
import re
import sys
from urllib.parse import urlsplit

import numpy as np

from .dataset import DataCorrupt, Dataset, DataUnavailable
from .download import reachable
from .resize import resize_uint8

# The host each builder downloads from, where known (tfds' svhn_cropped and mnist builders); for other builders
# the hosts of the URLs in the builder's module, else TFDS' own bucket.
HOSTS = {
    "svhn_cropped": "http://ufldl.stanford.edu/housenumbers/",
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
}
FALLBACK_HOST = "https://storage.googleapis.com/"
_ARRAY_RECORD = {"file_format": "array_record"}  # the random-access format data_source needs
_URL = re.compile(r"https?://[A-Za-z0-9.-]+")


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataUnavailable(f"tensorflow-datasets is not installed ({e}): pip install 'jaxdl[tfds]'") from e
    return tfds


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__


def _declared(tfds, name: str, data_dir: str | None):
    """The builder tfds has for `name` (its metadata as declared in code, or as prepared in data_dir), or None
    when tensorflow-datasets cannot construct it here; then the opened source's metadata is checked instead."""
    try:
        return tfds.builder(name, data_dir=data_dir, **_ARRAY_RECORD)
    except Exception as e:  # noqa: BLE001 -- tfds raises many kinds; only "not found" is a verdict
        if type(e).__name__ == "DatasetNotFoundError":
            base = name.split("/")[0].split(":")[0]
            raise ValueError(f"tfds:{name}: tensorflow-datasets has no data set {base!r} (tfds.list_builders() "
                             "lists them; image classification: cifar10, cifar100, mnist, svhn_cropped, ...)") from None
        return None


def _keys(name: str, features) -> tuple[str, str]:
    """(image key, label key) of an image-classification FeaturesDict: an Image and a ClassLabel, preferring
    the supervised keys; anything else is a ValueError of one line."""
    def kind(key: str) -> str:
        return type(features[key]).__name__ if key in features else ""
    image = next((k for k in ("image", *features.keys()) if kind(k) == "Image"), None)
    label = next((k for k in ("label", *features.keys()) if kind(k) == "ClassLabel"), None)
    if image is None or label is None:
        has = ", ".join(f"{k}: {kind(k)}" for k in features.keys())
        raise ValueError(f"tfds:{name} is not an image-classification data set (needs an Image and a ClassLabel "
                         f"feature, it has {has})")
    dtype = np.dtype(features[image].np_dtype)
    if dtype != np.uint8:
        raise ValueError(f"tfds:{name}'s images are {dtype}, jaxdl takes uint8 images")
    return image, label


def _hosts(name: str, builder) -> list[str]:
    """Where the builder may download from: HOSTS, else the hosts of the URLs its module names (download URLs,
    homepages, citations: a probe that none answers is what tells "offline" fast), else TFDS' bucket."""
    if name in HOSTS:
        return [HOSTS[name]]
    try:
        text = inspect.getsource(sys.modules[type(builder).__module__])
    except (OSError, TypeError, KeyError):
        text = ""
    hosts = list(dict.fromkeys(f"{urlsplit(u).scheme}://{urlsplit(u).hostname}/" for u in _URL.findall(text)
                               if urlsplit(u).hostname != "www.apache.org"))  # the license header's
    return hosts[:8] or [FALLBACK_HOST]


def _open(tfds, name: str, split: str, data_dir: str | None, download: bool, builder):
    """The tfds random-access source, preparing it only when a host it downloads from is reachable."""
    where = f"prepare it with tfds.data_source({name!r}, builder_kwargs={_ARRAY_RECORD}) on a machine online"
    where += f" and copy it into {data_dir or '$TFDS_DATA_DIR (default ~/tensorflow_datasets)'}"
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False, builder_kwargs=_ARRAY_RECORD)
    except Exception as e:  # tfds raises KeyError, AssertionError, NotImplementedError... when not prepared
        if not download:
            raise DataUnavailable(f"tfds:{name} is not prepared ({_first_line(e)}) and download=False: {where}") from e
    hosts = _hosts(name, builder)
    if not reachable(hosts):
        which = (f"the host of {hosts[0]} is unreachable" if len(hosts) == 1
                 else f"none of its hosts ({', '.join(hosts)}) is reachable")
        raise DataUnavailable(f"tfds:{name} is not prepared and {which}: {where}")
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=True, builder_kwargs=_ARRAY_RECORD)
    except Exception as e:
        raise DataUnavailable(f"tfds:{name}: download_and_prepare failed ({_first_line(e)}): {where}") from e


def _check_split(name: str, split: str, builder) -> None:
    """A plain split name the prepared metadata does not list is one line naming the ones it has."""
    splits = list(getattr(getattr(builder, "info", None), "splits", {}) or {}) if builder is not None else []
    if splits and re.fullmatch(r"\w+", split) and split not in splits:
        raise ValueError(f"tfds:{name} has splits {', '.join(splits)}, not {split!r}: take a test split from "
                         "'train' with jaxdl.data.train_val_split")


def _stack(name: str, images: list[np.ndarray], image_size: int | None) -> np.ndarray:
    """NHWC uint8; images of different sizes need `image_size`, which resizes every image to that square."""
    if image_size is not None:
        return np.concatenate([resize_uint8(im[None], image_size) for im in images])
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        some = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3])
        raise DataCorrupt(f"tfds:{name}'s images differ in size ({some}, ...): load it with image_size=N to resize "
                          "them to NxN")
    return np.stack(images)


def load_tfds(name: str, split: str = "train", *, data_dir: str | None = None, download: bool = True,
              image_size: int | None = None) -> Dataset:
    """Split `split` of tfds' image-classification data set `name`, decoded into a uint8 NHWC Dataset whose
    classes are the data set's label names; image_size resizes every image to a square (needed when they vary)."""
    tfds = _import_tfds()
    builder = _declared(tfds, name, data_dir)
    if builder is not None:
        _keys(name, builder.info.features)
        _check_split(name, split, builder)
    source = _open(tfds, name, split, data_dir, download, builder)
    info = getattr(source, "dataset_info", None) or getattr(builder, "info", None)  # prepared: the label names
    if info is None:
        raise DataCorrupt(f"tfds:{name} has no metadata (dataset_info) to take its features and class names from")
    image_key, label_key = _keys(name, info.features)
    examples = [source[i] for i in range(len(source))]
    if not examples:
        raise DataCorrupt(f"tfds:{name} split {split!r} holds no examples")
    images = _stack(name, [np.asarray(ex[image_key], np.uint8) for ex in examples], image_size)
    labels = np.array([ex[label_key] for ex in examples], np.int32).reshape(len(examples))
    classes = tuple(info.features[label_key].names)
    name_out = f"tfds:{name}" + (f" (resized to {image_size}x{image_size})" if image_size is not None else "")
    return Dataset(images, labels, name_out, real=True, classes=classes)
