"""Batches from image files decoded on the fly: `FolderLoader`, the file-backed twin of `jaxdl.data.Loader`.

The contract is Loader's: `len(loader)` batches per epoch of {"image": float32 NHWC normalised, "label": int32,
"mask": bool} with static shapes; training drops the ragged last batch, shuffles by (seed, epoch) and crops at
random from a zero border (`pad` pixels of the resized image, no flips); evaluation pads the last batch and
masks the padding. Batch `i` of epoch `e` is a pure function of (seed, e, i), and it equals Loader's batch over
the same images decoded into memory (`Loader(split.to_dataset(size), ...)`), so a resume is exact.

Decoding runs in grain (`grain.MapDataset` -> `to_iter_dataset`): `workers` threads each build whole batches
(PIL releases the GIL while it decodes and resizes, numpy while it normalises), `prefetch` batches are kept in
flight, delivered in order. A file that fails to decode stops the epoch with `DataCorrupt` naming it, raised in
the consumer when it reaches that batch; closing or dropping the epoch's iterator stops the threads (each after
the batch it is building). grain's process workers (`mp_prefetch`) are not used: on the 2-core machine they
delivered 330-960 img/s where threads deliver 1,300-4,600, every epoch spawns fresh processes (2-5 s), and they
need `if __name__ == "__main__":` and parsed absl flags in the user's program (grain 0.2.18).

    python -m jaxdl.data.folder_pipeline [DIR] [--generate 2000] [--sizes 32,224] [--arch resnet18]

measures the images/s the pipeline delivers (and with --arch, the training rate of `arch` fed by it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np

from . import augment as augmentations
from .dataset import DataCorrupt
from .folder import FolderSplit, _check_size, default_workers, read_image
from .pipeline import _AUGMENT, _AUTOAUGMENT, _SHUFFLE, check_rows, crop_offsets

Batch = dict[str, Any]


def _window(shift: int, size: int) -> tuple[int, int]:
    """The output rows [lo, hi) whose source row (row + shift) lies inside an image of `size` rows."""
    lo = min(size, max(0, -shift))
    return lo, max(lo, min(size, size - shift))


class FolderLoader:
    """Batches of {"image": float32 NHWC normalised, "label": int32, "mask": bool} from a FolderSplit.

    Every image is converted to RGB and resized to image_size x image_size (PIL, antialiased bilinear); then,
    when training with `augment`, randomly cropped from a `pad`-pixel zero border and, with `autoaugment` (a
    policy of `augment.NAMES`), augmented as Loader's; then normalised with mean/std (3 values each, on the
    [0, 1] scale). `workers` decoding threads (default: the CPUs, at most 8) and `prefetch` batches in
    flight, being built or ready (default workers + 1; fewer than workers leaves threads idle); prefetch=0 or
    workers=0 builds batches in the consumer's thread. `sharding`, when given, `device_put`s each batch from
    the worker threads. rows=(start, stop) builds only those rows of every batch (a process's part of the
    global batch), with the numbers they have in the whole batch.
    """

    def __init__(self, ds: FolderSplit, batch_size: int, *, train: bool, mean: Sequence[float],
                 std: Sequence[float], image_size: int, seed: int = 0, augment: bool = True, pad: int = 4,
                 drop_remainder: bool | None = None, workers: int | None = None, prefetch: int | None = None,
                 sharding: Any = None, autoaugment: str | None = None, rows: tuple[int, int] | None = None) -> None:
        _check_size(image_size)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean/std need 3 values (images are RGB), got {len(mean)}/{len(std)}")
        self.ds, self.batch_size, self.train, self.seed = ds, batch_size, train, seed
        self.rows = check_rows(rows, batch_size)
        self.image_size, self.augment, self.pad, self.sharding = int(image_size), augment, pad, sharding
        self.autoaugment = augmentations.create(autoaugment) if autoaugment else None
        self.drop_remainder = train if drop_remainder is None else drop_remainder
        self.workers = default_workers() if workers is None else workers
        self.prefetch = self.workers + 1 if prefetch is None else prefetch
        if self.workers < 0 or self.prefetch < 0:
            raise ValueError(f"workers and prefetch must be >= 0, got {self.workers}/{self.prefetch}")
        if len(self) == 0:
            raise ValueError(f"{len(ds)} images make no batch of {batch_size} with drop_remainder")
        if self.workers and self.prefetch:
            import grain  # noqa: F401  (here, not at jaxdl.data's import: 1.4 s, paid once, outside any epoch)
        self._scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
        self._bias = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.ds.classes

    def __len__(self) -> int:
        n, b = len(self.ds), self.batch_size
        return n // b if self.drop_remainder else -(-n // b)

    def order(self, epoch: int) -> np.ndarray:
        """Sample order of `epoch`: a seeded permutation when training, identity otherwise (as Loader's)."""
        if not self.train:
            return np.arange(len(self.ds))
        return np.random.default_rng([self.seed, epoch, _SHUFFLE]).permutation(len(self.ds))

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None) -> Batch:
        """Host (numpy) batch `index` of `epoch`, decoded now; `order` may be passed to skip recomputing it.

        The same numbers as Loader's crop, AutoAugment and normalisation over the decoded images (the same
        random draws), but each crop is a shifted copy instead of a gather over the padded batch: 15x cheaper
        at 224x224.
        """
        whole = (self.order(epoch) if order is None else order)[index * self.batch_size:(index + 1) * self.batch_size]
        first, stop = self.rows
        idx = whole[first:stop]
        n, s, rows = len(idx), self.image_size, stop - first
        images = np.zeros((rows, s, s, 3), np.uint8)  # rows past n: the eval padding
        shift = self.train and self.augment and self.pad > 0
        if shift:  # random_crop's draws, those of the whole batch
            rng = np.random.default_rng([self.seed, epoch, _AUGMENT, index])
            dy, dx = (d - self.pad for d in crop_offsets(rng, self.pad, len(whole), slice(first, stop)))
        for k, i in enumerate(idx):
            image = read_image(self.ds.file(i), s)
            if shift:  # output pixel (r, q) is image pixel (r + dy, q + dx), zero outside
                (r0, r1), (q0, q1) = _window(int(dy[k]), s), _window(int(dx[k]), s)
                images[k, r0:r1, q0:q1] = image[r0 + dy[k]:r1 + dy[k], q0 + dx[k]:q1 + dx[k]]
            else:
                images[k] = image
        if self.train and self.augment and self.autoaugment is not None:  # after the crop, as Loader's
            rng = np.random.default_rng([self.seed, epoch, _AUTOAUGMENT, index])
            images[:n] = self.autoaugment(images[:n], rng, of=len(whole), start=first)
        x = np.empty(images.shape, np.float32)
        np.multiply(images[:n], self._scale, out=x[:n])  # Loader's images.astype(float32) * scale + bias
        x[:n] += self._bias
        x[n:] = 0.0
        labels = np.zeros(rows, np.int32)
        labels[:n] = self.ds.labels[idx]
        return {"image": x, "label": labels, "mask": np.arange(rows) < n}

    def _place(self, batch: Batch) -> Batch:
        if self.sharding is None:
            return batch
        import jax

        return jax.device_put(batch, self.sharding)

    def _build(self, epoch: int, order: np.ndarray, index: int) -> Batch:
        return self._place(self.batch(epoch, int(index), order))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches start..len-1 of `epoch`, decoded by `workers` threads, `prefetch` in flight."""
        order = self.order(epoch)
        if self.workers == 0 or self.prefetch == 0:
            for i in range(start, len(self)):
                yield self._build(epoch, order, i)
            return
        import grain

        batches = grain.MapDataset.range(start, len(self)).map(partial(self._build, epoch, order))
        it = iter(batches.to_iter_dataset(grain.ReadOptions(num_threads=self.workers,
                                                            prefetch_buffer_size=max(self.prefetch, 1))))
        try:
            yield from it
        except DataCorrupt as e:  # raised in a worker: the one line naming the file, without grain's frames and note
            raise DataCorrupt(str(e)) from None
        finally:  # on exhaustion, close(), an error, or an abandoned generator being collected
            close = getattr(it, "close", None)  # older grain (0.2.13, Python 3.10's) has none: its threads
            # end when the iterator is collected
            del it
            if close is not None:
                close()


# ------------------------------------------------------------------------------------------------ benchmark


def _generate(directory: str, n: int, size: int = 64, classes: int = 10) -> None:
    """`n` size x size JPEGs (smooth colour fields plus noise, quality 90) in `classes` class folders."""
    from pathlib import Path

    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"class{c:02d}" for c in range(classes)]
    for name in names:
        Path(directory, name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        noisy = np.clip(np.asarray(base, np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(Path(directory, names[i % classes], f"{i:06d}.jpg"), quality=90)


def _pipeline_rate(split: FolderSplit, size: int, batch_size: int, workers: int, epochs: int = 2) -> float:
    """Images/s of whole training epochs (the best of `epochs`: the host is shared)."""
    import time

    from .normalize import IMAGENET_MEAN, IMAGENET_STD

    loader = FolderLoader(split, batch_size, train=True, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=size,
                          workers=workers)
    best = 0.0
    for e in range(epochs):
        start = time.perf_counter()
        for _ in loader.epoch(e):
            pass
        best = max(best, len(loader) * batch_size / (time.perf_counter() - start))
    return best


def _training_rate(arch: str, split: FolderSplit, size: int, batch_size: int, steps: int,
                   rounds: int = 2) -> tuple[float, float]:
    """Median steady images/s of `arch` trained by jaxdl's Trainer on (FolderLoader batches, the same batches
    from memory), `steps` steps after the compiling one, the two alternating for `rounds` rounds."""
    from flax import nnx

    from .. import models
    from ..train import TrainConfig, Trainer
    from .normalize import IMAGENET_MEAN, IMAGENET_STD

    part = split.take(np.arange(min(len(split), (steps + 1) * batch_size)), "benchmark")
    folder = FolderLoader(part, batch_size, train=True, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=size)
    memory = _InMemory(folder)
    config = TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.01, schedule="constant")
    rates: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for loader, found in zip((folder, memory), rates, strict=True):
            model = models.create(arch, num_classes=len(split.classes), rngs=nnx.Rngs(0))
            found.append(Trainer(model, config, len(loader), progress=False).fit(loader)[-1]["images_per_s"])
    return float(np.median(rates[0])), float(np.median(rates[1]))


class _InMemory:
    """`loader`'s epoch-0 batches built beforehand: the training rate without any input pipeline."""

    def __init__(self, loader: FolderLoader) -> None:
        self.batch_size, self._batches = loader.batch_size, list(loader.epoch(0))

    def __len__(self) -> int:
        return len(self._batches)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        return iter(self._batches)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import os
    import platform
    import tempfile
    import time

    from ..runtime import use_fast_cpu_flags
    from .folder import load_folder

    p = argparse.ArgumentParser(prog="python -m jaxdl.data.folder_pipeline", description=__doc__.split("\n")[0])
    p.add_argument("directory", nargs="?", help="an image folder (default: --generate N JPEGs into a temp dir)")
    p.add_argument("--generate", type=int, default=2000, help="64x64 JPEGs to generate when no directory is given")
    p.add_argument("--sizes", default="32,224", help="image sizes to resize to")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", default=f"0,1,{default_workers()}", help="decoding threads to compare (0: none)")
    p.add_argument("--arch", help="also time training this architecture on the folder's batches")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per size (after the compiling one)")
    args = p.parse_args(argv)
    use_fast_cpu_flags()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.directory
        if directory is None:
            directory = tmp
            _generate(tmp, args.generate)
        split = load_folder(directory, "train", val_fraction=0, test_fraction=0)
        print(f"{len(split)} images of {directory}, {len(split.classes)} classes, batch {args.batch_size}; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        for size in map(int, args.sizes.split(",")):
            rates = {w: _pipeline_rate(split, size, args.batch_size, int(w)) for w in args.workers.split(",")}
            line = ", ".join(f"{w} workers {r:.0f} img/s" for w, r in rates.items())
            print(f"{size}x{size} pipeline (decode + resize + crop + normalise, best of 2 epochs): {line}")
            if args.arch:
                fed, alone = _training_rate(args.arch, split, size, args.batch_size, args.steps)
                print(f"{size}x{size} {args.arch} training, median of 2 alternating runs of {args.steps} steps: "
                      f"{fed:.1f} img/s fed by the FolderLoader, {alone:.1f} img/s from batches in memory")


if __name__ == "__main__":
    main()
