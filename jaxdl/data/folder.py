"""Your own images, in torchvision's ImageFolder layout: one subfolder per class, named for the class.

    split = load_folder("pets", "train")        # pets/cat/*.jpg, pets/dog/*.png, ...
    split.classes, split.class_to_idx            # ("cat", "dog"), {"cat": 0, "dog": 1}: sorted, as ImageFolder
    loader = FolderLoader(split, 64, train=True, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=224)
    small = split.to_dataset(64)                 # or decode once into memory, for jaxdl.data.Loader

Layout. `DIR/train`, `DIR/val` and `DIR/test`, each holding class folders, are used when present; a missing
val or test is carved out of train (stratified, `val_fraction`/`test_fraction` of it). A DIR without them is
split into train/val/test the same way. The classes are train's (or DIR's) subfolder names, sorted; files are
found recursively (as ImageFolder), by extension, case-insensitive: .png .jpg .jpeg .bmp .webp. Hidden files
and folders (a leading dot, e.g. .ipynb_checkpoints) are skipped, unlike ImageFolder, which makes them classes.

The split is a pure function of (file list, seed): each class's files are ranked by a hash of (seed, relative
path), the first ones going to test, then val. A resumed run therefore sees the same split, and adding files
moves few others. Counts are stratified: test and val get round(fraction * N) images (at least one when the
fraction is positive), shared among the classes in proportion to their sizes (largest remainder), and every
class keeps at least one image for train.

Decoding is lazy (the folder may not fit in memory): `read_image` is PIL's `convert("RGB")` (as torchvision's
default loader: grey replicated, alpha dropped) then an antialiased bilinear resize to a square, and a file
that fails to decode raises `DataCorrupt` naming it. Problems with the layout raise `FolderError`, a
ValueError, in one line naming the path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import DataCorrupt, Dataset

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
SPLITS = ("train", "val", "test")
_EXTENSIONS = ", ".join(IMAGE_EXTENSIONS)


class FolderError(ValueError):
    """A directory that is not a usable image folder: the message is one line naming the path and the fix."""


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _subdirs(directory: Path) -> list[str]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as e:
        raise FolderError(f"cannot list {directory}: {e.strerror or e}") from None
    return [e.name for e in entries if _visible(e.name) and e.is_dir()]


def _is_image(name: str) -> bool:
    return _visible(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: Path) -> list[str]:
    """Image files under `folder`, recursively (following links, as ImageFolder), as sorted posix paths
    relative to `folder`."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True, onerror=_raise_unlistable):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        rel = Path(top).relative_to(folder)
        found.extend((rel / f).as_posix() for f in sorted(files) if _is_image(f))
    return found


def _raise_unlistable(error: OSError) -> None:
    raise FolderError(f"cannot list {error.filename}: {error.strerror or error}")


def _check_directory(directory: Path) -> None:
    if not directory.exists():
        raise FolderError(f"{directory}: no such directory (expected one subfolder of images per class)")
    if not directory.is_dir():
        raise FolderError(f"{directory} is a file, not a directory (expected one subfolder of images per class)")


def find_classes(directory: str | os.PathLike) -> tuple[tuple[str, ...], dict[str, int]]:
    """(classes, class_to_idx) of a class-folder directory: its visible subfolder names, sorted, as
    torchvision's `find_classes`; at least two are required."""
    directory = Path(directory)
    _check_directory(directory)
    classes = tuple(_subdirs(directory))
    if not classes:
        loose = [n for n in os.listdir(directory) if _is_image(n)]
        hint = f" ({len(loose)} images lie directly in it: move them into class folders)" if loose else ""
        raise FolderError(f"{directory} has no class folders{hint}; expected one subfolder of images per class, "
                          f"e.g. {directory / 'cat'}/*.jpg")
    if len(classes) == 1:
        raise FolderError(f"{directory} has a single class folder ({classes[0]}): a classifier needs at least two")
    return classes, {c: i for i, c in enumerate(classes)}


def scan(directory: str | os.PathLike, classes: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(relative paths, int32 labels) of every image under `directory`'s class folders, class by class in
    `classes` order (default: `find_classes`), each class's files sorted. Raises FolderError for a class
    folder without images, a folder that is not one of `classes`, or no images at all."""
    directory = Path(directory)
    if classes is None:
        classes = find_classes(directory)[0]
    else:
        _check_directory(directory)
        unknown = [d for d in _subdirs(directory) if d not in classes]
        if unknown:
            raise FolderError(f"{directory} has class folders that train/ lacks: {', '.join(unknown)} "
                              f"(train's classes: {', '.join(classes)})")
    paths, labels, empty = [], [], []
    for label, name in enumerate(classes):
        if not (directory / name).is_dir():  # a val/test folder may lack a class
            continue
        files = _images_under(directory / name)
        if not files:
            empty.append(str(directory / name))
        paths.extend(f"{name}/{f}" for f in files)
        labels.extend([label] * len(files))
    if len(empty) == len(classes) or not paths:
        raise FolderError(f"no images in {directory}'s class folders (looked for {_EXTENSIONS}, any case)")
    if empty:
        raise FolderError(f"empty class folder{'s' if len(empty) > 1 else ''}: {', '.join(empty)} "
                          f"(no {_EXTENSIONS} files): add images or remove the folder")
    return paths, np.asarray(labels, np.int32)


def _rank_key(seed: int, path: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{path}".encode(), digest_size=8).digest()


def _quotas(counts: np.ndarray, fraction: float, room: np.ndarray) -> np.ndarray:
    """Per-class counts summing to round(fraction * total) (at least 1 when fraction > 0), each class its
    share by largest remainder, none above `room`."""
    if fraction <= 0:
        return np.zeros_like(counts)
    total = min(max(1, round(fraction * counts.sum())), int(room.sum()))
    exact = counts * fraction
    quota = np.minimum(np.floor(exact).astype(np.int64), room)
    by_remainder = sorted(range(len(counts)), key=lambda c: (-(exact[c] - np.floor(exact[c])), c))
    while quota.sum() < total:  # hand out the rest by largest remainder, where there is room
        for c in by_remainder:
            if quota.sum() < total and quota[c] < room[c]:
                quota[c] += 1
    return quota


def stratified_split(paths: Sequence[str], labels: np.ndarray, fractions: dict[str, float],
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Indices into `paths` of each split in `fractions` (e.g. {"test": 0.1, "val": 0.1}) and of "train" (the
    rest), stratified by `labels`; a pure function of (paths, labels, fractions, seed). Splits take their
    share in `fractions`' order, so the first (test) stays the same when a later fraction changes."""
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or total >= 1:
        raise ValueError(f"split fractions must be >= 0 and sum to less than 1, got {fractions}")
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    counts = np.bincount(labels, minlength=n_classes).astype(np.int64)
    room = np.maximum(counts - 1, 0)  # every class keeps one training image
    quotas = {}
    for name, fraction in fractions.items():
        quotas[name] = _quotas(counts, fraction, room)
        room = room - quotas[name]
    parts: dict[str, list[int]] = {name: [] for name in (*fractions, "train")}
    for c in range(n_classes):
        members = sorted(np.flatnonzero(labels == c), key=lambda i: _rank_key(seed, paths[i]))
        at = 0
        for name in fractions:
            parts[name].extend(members[at:at + quotas[name][c]])
            at += quotas[name][c]
        parts["train"].extend(members[at:])
    return {name: np.sort(np.asarray(idx, np.int64)) for name, idx in parts.items()}


@dataclass(frozen=True, eq=False)
class FolderSplit:
    """One split of an image folder: files and labels, decoded only when read.

    root:    the directory the paths are relative to (DIR, or DIR/train, DIR/val, DIR/test).
    paths:   posix paths relative to root, "class/file.jpg", class by class.
    labels:  int32 (N,), indices into `classes`.
    classes: the class names, sorted (torchvision's `classes`).
    name:    what the data is, e.g. "folder:/data/pets [train: 80% of 1234 images, stratified, seed 0]".
    real:    True (it is the user's data), as Dataset.real.
    """

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str
    real: bool = True

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(absolute path, label) pairs, as torchvision's `ImageFolder.samples`."""
        return [(str(self.root / p), int(y)) for p, y in zip(self.paths, self.labels, strict=True)]

    def file(self, index: int) -> Path:
        return self.root / self.paths[index]

    def counts(self) -> dict[str, int]:
        """Images per class."""
        return dict(zip(self.classes, np.bincount(self.labels, minlength=len(self.classes)).tolist(), strict=True))

    @property
    def fingerprint(self) -> str:
        """sha256 of (classes, paths, labels): equal for the same split of the same file list, whatever the
        root, e.g. to check that a resumed run reads the data it was trained on."""
        h = hashlib.sha256()
        for part in (*self.classes, "\0", *self.paths):
            h.update(part.encode() + b"\n")
        h.update(self.labels.tobytes())
        return h.hexdigest()

    def read(self, index: int, image_size: int | None = None) -> np.ndarray:
        """Image `index` as uint8 (H, W, 3); see read_image."""
        return read_image(self.file(index), image_size)

    def take(self, indices: np.ndarray, note: str) -> FolderSplit:
        """Rows `indices` as a new split whose name records how it was derived (as Dataset.take)."""
        indices = np.asarray(indices, np.int64)
        return FolderSplit(self.root, tuple(self.paths[i] for i in indices), self.labels[indices], self.classes,
                           f"{self.name} [{note}]", self.real)

    def to_dataset(self, image_size: int, workers: int | None = None) -> Dataset:
        """Every image decoded and resized to `image_size` into an in-memory Dataset (for folders that fit:
        N * image_size^2 * 3 bytes), decoded by `workers` threads."""
        _check_size(image_size)
        images = np.empty((len(self), image_size, image_size, 3), np.uint8)

        def fill(i: int) -> None:
            images[i] = self.read(i, image_size)

        with ThreadPoolExecutor(workers or default_workers()) as pool:
            for _ in pool.map(fill, range(len(self))):
                pass
        return Dataset(images, self.labels.copy(), f"{self.name} [decoded at {image_size}x{image_size}]", self.real,
                       self.classes)

    def mean_std(self, image_size: int, limit: int = 2048,
                 seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) on the [0, 1] scale of the images resized to `image_size`, from at most
        `limit` of them (a seeded sample), for training from scratch (pretrained weights want ImageNet's)."""
        from .normalize import dataset_mean_std

        sample = self if len(self) <= limit else self.take(
            np.sort(np.random.default_rng(seed).choice(len(self), limit, replace=False)), f"{limit} for mean/std")
        return dataset_mean_std(sample.to_dataset(image_size))


def default_workers() -> int:
    """Decoding threads: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _check_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")


def read_image(path: str | os.PathLike, image_size: int | None = None) -> np.ndarray:
    """`path` decoded by PIL, converted to RGB (as torchvision's pil_loader) and, with `image_size`, resized to
    image_size x image_size (antialiased bilinear, PIL's); uint8 (H, W, 3). DataCorrupt, naming the file, when
    it cannot be read or decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = None if image_size is None else (int(image_size), int(image_size))
            if size is not None and im.mode == "L" and im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)  # same pixels as converting first, 3x less work
            im = im.convert("RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(im)
    except MemoryError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error... on bad files
        reason = (str(e).replace(repr(str(path)), "").strip().splitlines() or [""])[0][:200] or type(e).__name__
        raise DataCorrupt(f"{path}: not a readable image ({reason}): replace or delete the file") from None


def load_folder(directory: str | os.PathLike, split: str = "train", *, seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 0.1) -> FolderSplit:
    """Split `split` ("train", "val" or "test") of the image folder `directory` (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for what, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{what} must lie in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    root = Path(directory).expanduser().absolute()
    _check_directory(root)
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:  # plain class folders: split DIR itself
        return _carve(root, root, split, {"test": test_fraction, "val": val_fraction}, seed, f"folder:{root}")
    if "train" not in present:
        raise FolderError(f"{root} has {'/, '.join(present)}/ but no train/ folder: add train/ (with the same class "
                          f"folders), or put the class folders directly in {root} to have it split")
    others = [d for d in _subdirs(root) if d not in SPLITS]
    if others:
        raise FolderError(f"{root} mixes split folders ({', '.join(present)}) with other folders "
                          f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}): put each class folder "
                          f"inside train/ (and val/, test/)")
    classes, _ = find_classes(root / "train")
    if split in present and split != "train":
        paths, labels = scan(root / split, classes)
        return FolderSplit(root / split, tuple(paths), labels, classes, f"folder:{root / split}")
    missing = {s: f for s, f in (("test", test_fraction), ("val", val_fraction)) if s not in present}
    if split in missing and missing[split] == 0:
        raise FolderError(f"{root} has no {split}/ folder and {split}_fraction is 0: add {root / split} or give a "
                          f"{split}_fraction to take from train/")
    return _carve(root / "train", root, split, missing, seed, f"folder:{root / 'train'}", classes)


def _carve(directory: Path, root: Path, split: str, fractions: dict[str, float], seed: int, name: str,
           classes: tuple[str, ...] | None = None) -> FolderSplit:
    """`split` of the stratified split of `directory`'s images by `fractions` (the rest is train)."""
    if classes is None:
        classes = find_classes(directory)[0]
    paths, labels = scan(directory, classes)
    fractions = {s: f for s, f in fractions.items() if f > 0}
    if split != "train" and split not in fractions:
        raise FolderError(f"{root} has no {split}/ folder and {split}_fraction is 0: give a {split}_fraction "
                          f"to take it from {directory}")
    if not fractions:  # nothing held out: train is the whole folder
        return FolderSplit(directory, tuple(paths), labels, classes, name)
    parts = stratified_split(paths, labels, fractions, seed)
    idx = parts[split]
    if len(idx) == 0:
        raise FolderError(f"{directory}: {len(paths)} images leave none for {split}; add images or change the "
                          f"fractions")
    share = ", ".join(f"{s} {f:g}" for s, f in fractions.items())
    note = f"{split}: {len(idx)} of {len(paths)} images, stratified ({share}), seed {seed}"
    return FolderSplit(directory, tuple(paths[i] for i in idx), labels[idx], classes, f"{name} [{note}]")
