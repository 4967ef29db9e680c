"""Your own images from one .npz file: the "npz:FILE" source.

    np.savez("pets.npz", x=images, y=labels, classes=np.array(["cat", "dog", "fish"]))
    train, test = load("npz:pets.npz", "train"), load("npz:pets.npz", "test")

Arrays:
    x        uint8, (N, H, W, C) with C 1 or 3, or (N, H, W) greyscale (a channel axis is added);
    y        integers >= 0, (N,);
    classes  optional, strings, one per label (default "0", "1", ... up to the largest label);
    x_test, y_test  optional, the test split, laid out like x and y.

Without x_test/y_test the file holds one pool of images: "test" is a stratified TEST_FRACTION of it, drawn
with the fixed SPLIT_SEED (so every run, whatever its training seed, tests on the same images) and "train"
is the rest, disjoint from it. Take a validation set from "train" (`train_val_split`). Every mistake in the
file is one DataCorrupt line that names the file and says how to fix it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .dataset import DataCorrupt, Dataset, DataUnavailable

SPLITS = ("train", "test")
TEST_FRACTION = 0.1  # of x/y held out as "test" when the file has no x_test/y_test
SPLIT_SEED = 0  # fixed: the held-out test images do not change with a run's seed
_EXAMPLE = "e.g. np.savez(FILE, x=uint8_images, y=int_labels, classes=np.array(names))"


def _fail(path: Path, what: str) -> DataCorrupt:
    return DataCorrupt(f"{path}: {what}")


def _images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """x as uint8 NHWC, greyscale NHW given a channel axis; anything else is one line saying how to fix it."""
    if x.dtype != np.uint8:
        if x.dtype.kind == "f":
            hint = (f"x = np.clip(np.rint({key} * 255), 0, 255).astype(np.uint8) for [0, 1] floats, or "
                    f"np.clip(np.rint({key}), 0, 255).astype(np.uint8) for 0..255 floats")
        else:
            hint = f"x = np.clip({key}, 0, 255).astype(np.uint8) if it holds 0..255 pixel values"
        raise _fail(path, f"{key} is {x.dtype}, images must be uint8 (0..255): convert with {hint}")
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim != 4:
        raise _fail(path, f"{key} has shape {x.shape}: images must be (N, H, W, C) or greyscale (N, H, W)")
    if x.shape[0] == 0:
        raise _fail(path, f"{key} holds no images")
    if x.shape[3] not in (1, 3):
        if x.shape[1] in (1, 3):
            hint = f"it looks channels-first (NCHW): save {key}.transpose(0, 2, 3, 1)"
        elif x.shape[3] == 4:
            hint = f"RGBA: drop the alpha channel, {key}[..., :3]"
        else:
            hint = "images must be (N, H, W, C) with C 1 (grey) or 3 (RGB)"
        raise _fail(path, f"{key} has shape {x.shape}, {x.shape[3]} channels: {hint}")
    return x


def _labels(path: Path, key: str, y: np.ndarray, n: int, image_key: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        hint = f"save {key}.astype(np.int64)" if y.dtype.kind in "fb" else "map each label to its class index 0, 1, ..."
        raise _fail(path, f"{key} is {y.dtype}, labels must be integers (class indices 0, 1, ...): {hint}")
    if y.ndim != 1:
        raise _fail(path, f"{key} has shape {y.shape}, labels must be one per image, (N,): save {key}.ravel()"
                    if y.size == n else f"{key} has shape {y.shape}, labels must be one per image, (N,)")
    if len(y) != n:
        raise _fail(path, f"{image_key} holds {n} images but {key} holds {len(y)} labels: they must match one to one")
    if y.min() < 0:
        raise _fail(path, f"{key} holds negative labels ({y.min()}): labels are class indices 0, 1, ...")
    if y.max() > np.iinfo(np.int32).max:
        raise _fail(path, f"{key} holds label {y.max()}, too large for a class index")
    return y.astype(np.int32)


def _classes(path: Path, arrays, labels: list[np.ndarray]) -> tuple[str, ...]:
    """The class names: the file's `classes`, or "0".."max label"; at least 2, enough for every label."""
    top = max(int(y.max()) for y in labels)
    if "classes" not in arrays:
        if top < 1:
            raise _fail(path, "every label is 0: a classifier needs at least 2 classes")
        return tuple(str(c) for c in range(top + 1))
    try:
        names = arrays["classes"]
    except ValueError:  # an object array (a list of str saved as is) needs pickle, which is never allowed
        raise _fail(path, "classes is an object array: save strings, classes=np.array(names, dtype=str)") from None
    if names.dtype.kind not in "US" or names.ndim != 1:
        raise _fail(path, f"classes is {names.dtype} of shape {names.shape}: it must be a 1-d array of strings, "
                    "classes=np.array(names, dtype=str)")
    names = tuple(str(c.decode() if isinstance(c, bytes) else c) for c in names.tolist())
    if len(names) < 2:
        raise _fail(path, f"classes holds {len(names)} name ({names!r:.100}): a classifier needs at least 2 classes")
    if len(names) <= top:
        raise _fail(path, f"classes holds {len(names)} names but the labels go up to {top}: give one name per "
                    f"label 0..{top}")
    if len(set(names)) != len(names):
        repeated = sorted({c for c in names if names.count(c) > 1})
        raise _fail(path, f"classes repeats {repeated!r:.200}: class names must be distinct")
    return names


def _open(path: Path):
    if not path.is_file():
        raise DataUnavailable(f"npz file {path} does not exist: {_EXAMPLE}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # numpy's reasons (e.g. "pickled data") mislead
        raise _fail(path, f"is not an .npz archive (np.load cannot read it as one): {_EXAMPLE}") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):  # np.load reads a .npy just as happily
        raise _fail(path, f"is a single .npy array, not an .npz archive of named arrays: {_EXAMPLE}")
    return arrays


def load_npz(file: str | Path, split: str = "train", *, test_fraction: float = TEST_FRACTION,
             split_seed: int = SPLIT_SEED) -> Dataset:
    """Split "train" or "test" of `file` (see the module doc for the arrays and the split policy)."""
    if split not in SPLITS:
        raise ValueError(f"npz split must be one of {SPLITS}, got {split!r}")
    path = Path(file).expanduser()
    with _open(path) as arrays:
        keys = set(arrays.files)
        for key in ("x", "y"):
            if key not in keys:
                raise _fail(path, f"has no array {key!r} (it holds {', '.join(sorted(keys)) or 'nothing'}): {_EXAMPLE}")
        if ("x_test" in keys) != ("y_test" in keys):
            have, lack = ("x_test", "y_test") if "x_test" in keys else ("y_test", "x_test")
            raise _fail(path, f"has {have} but no {lack}: a test split needs both (or neither, for a "
                        f"stratified {TEST_FRACTION:.0%} split of x/y)")
        try:
            x = _images(path, "x", arrays["x"])
            y = _labels(path, "y", arrays["y"], len(x), "x")
            has_test = "x_test" in keys
            if has_test:
                xt = _images(path, "x_test", arrays["x_test"])
                yt = _labels(path, "y_test", arrays["y_test"], len(xt), "x_test")
                if xt.shape[1:] != x.shape[1:]:
                    raise _fail(path, f"x_test images are {xt.shape[1:]}, x images {x.shape[1:]}: both splits must "
                                "have one image shape")
        except ValueError as e:  # an object array: np.load refuses pickled data
            raise _fail(path, f"holds an object array ({e}): save numeric arrays, x uint8 and y integers") from None
        classes = _classes(path, arrays, [y, yt] if has_test else [y])
    if len(np.unique(y)) < 2:
        raise _fail(path, f"every label in y is {y[0]} ({classes[y[0]]!r}): a classifier needs at least 2 classes")
    name = f"npz:{file}"
    if has_test:
        return Dataset(x, y, name, True, classes) if split == "train" else Dataset(xt, yt, name, True, classes)
    pool = Dataset(x, y, name, True, classes)
    counts = np.bincount(y)
    if counts[counts > 0].min() < 2:
        lonely = classes[int(np.flatnonzero(counts == counts[counts > 0].min())[0])]
        raise _fail(path, f"class {lonely!r} has a single image: a stratified test split needs at least 2 of each "
                    "class; add more, or save a test split as x_test/y_test")
    try:
        train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=split_seed)
    except ValueError as e:  # too few images for one test image per class
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _fail(path, f"cannot hold out a stratified {test_fraction:g} test split ({reason}): add images, or "
                    "save a test split as x_test/y_test") from None
    note = f"stratified {test_fraction:g} test split, seed {split_seed}"
    if split == "train":
        return pool.take(np.sort(train), f"train: all but the {note}")
    return pool.take(np.sort(test), f"test: the {note}")
