"""Host-side input pipeline for jitted training: static shapes, reproducible, prefetched.

Design constraints, each from a failure it prevents:
- Static batch shapes, so `jax.jit` compiles once: training drops the ragged last batch;
  evaluation pads it and marks the real rows in `mask`, so no test sample is ever dropped.
- Every batch is a pure function of (seed, epoch, batch index): a run resumed from a
  checkpoint sees exactly the batches it would have seen (`epoch(e, start=i)`).
- Augmentation is a random crop of the zero-padded image, no flips (a flipped 2 or 5 is
  not a digit), vectorised over the batch in numpy.
- A background thread builds `prefetch` batches ahead (and `device_put`s them with the
  given sharding) so the accelerator does not wait on numpy; it stops when the iterator
  is closed or dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import augment as augmentations
from .dataset import Dataset
from .resize import resize

Batch = dict[str, Any]
_SHUFFLE, _AUGMENT, _AUTOAUGMENT = 0, 1, 2  # separate seed streams: epoch order, crops, AutoAugment
_POLL_S = 0.05


def crop_offsets(rng: np.random.Generator, pad: int, n: int, part: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets in [0, 2 * pad] of a batch of `n` random crops, of which `part` is returned: the
    draws of the whole batch are made, so a process building some rows crops them as a single process would."""
    rows, cols = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    return rows[part], cols[part]


def random_crop(images: np.ndarray, pad: int, rng: np.random.Generator, of: int | None = None,
                start: int = 0) -> np.ndarray:
    """Crop each NHWC image at a random offset from its `pad`-pixel zero border (same shape). The images may be
    rows start.. of a batch of `of` (the draws are those of the whole batch)."""
    if pad <= 0:
        return images
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = crop_offsets(rng, pad, n if of is None else of, slice(start, start + n))
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


class Loader:
    """Batches of {"image": float32 NHWC normalised, "label": int32, "mask": bool}.

    mean/std are per output channel on the [0, 1] scale (see normalize.mean_std).
    channels=3 replicates grey images for models pretrained on RGB; image_size resizes
    (antialiased bilinear) after the crop, e.g. to the >= 63 px AlexNet needs. autoaugment names a policy of
    `augment.NAMES` (e.g. "autoaugment-svhn"), applied to training batches after the crop, seeded per batch
    like the crops, so a resumed run sees the same augmentations. rows=(start, stop) builds only those rows of
    every batch (a process's part of the global batch, `jaxdl.train.parallel.local_rows`), with the same numbers
    as the whole batch's rows.
    """

    def __init__(self, ds: Dataset, batch_size: int, *, train: bool, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0, image_size: int | None = None, channels: int | None = None, augment: bool = True,
                 pad: int = 4, drop_remainder: bool | None = None, prefetch: int = 2, sharding: Any = None,
                 autoaugment: str | None = None, rows: tuple[int, int] | None = None) -> None:
        self.ds, self.batch_size, self.train, self.seed = ds, batch_size, train, seed
        self.rows = check_rows(rows, batch_size)
        self.autoaugment = augmentations.create(autoaugment) if autoaugment else None
        self.image_size, self.augment, self.pad = image_size, augment, pad
        self.prefetch, self.sharding = prefetch, sharding
        self.drop_remainder = train if drop_remainder is None else drop_remainder
        self.channels = channels or ds.images.shape[-1]
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if self.channels not in (ds.images.shape[-1], 3):
            raise ValueError(f"cannot turn {ds.images.shape[-1]}-channel images into {self.channels} channels")
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} values, got {len(mean)}/{len(std)}")
        if len(self) == 0:
            raise ValueError(f"{len(ds)} samples make no batch of {batch_size} with drop_remainder")
        self._scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
        self._bias = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)

    def __len__(self) -> int:
        n, b = len(self.ds), self.batch_size
        return n // b if self.drop_remainder else -(-n // b)

    def order(self, epoch: int) -> np.ndarray:
        """Sample order of `epoch`: a seeded permutation when training, identity otherwise."""
        if not self.train:
            return np.arange(len(self.ds))
        return np.random.default_rng([self.seed, epoch, _SHUFFLE]).permutation(len(self.ds))

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None) -> Batch:
        """Host (numpy) batch `index` of `epoch`; `order` may be passed to skip recomputing it."""
        whole = (self.order(epoch) if order is None else order)[index * self.batch_size:(index + 1) * self.batch_size]
        first, stop = self.rows
        idx = whole[first:stop]
        images = self.ds.images[idx]
        if self.train and self.augment:  # torchvision's recipe order: RandomCrop(padding), then AutoAugment
            draws = {"of": len(whole), "start": first}
            images = random_crop(images, self.pad, np.random.default_rng([self.seed, epoch, _AUGMENT, index]), **draws)
            if self.autoaugment is not None:
                images = self.autoaugment(images, np.random.default_rng([self.seed, epoch, _AUTOAUGMENT, index]), **draws)
        if self.channels != images.shape[-1]:
            images = np.repeat(images, self.channels, axis=-1)
        x = resize(images, self.image_size) if self.image_size else images.astype(np.float32)
        x = x * self._scale + self._bias
        labels, mask = self.ds.labels[idx], np.ones(len(idx), bool)
        missing = stop - first - len(idx)
        if missing:  # ragged eval batch: pad to the static shape, mask out the padding
            x = np.concatenate([x, np.zeros((missing, *x.shape[1:]), np.float32)])
            labels = np.concatenate([labels, np.zeros(missing, np.int32)])
            mask = np.concatenate([mask, np.zeros(missing, bool)])
        return {"image": x, "label": labels, "mask": mask}

    def _place(self, batch: Batch) -> Batch:
        if self.sharding is None:
            return batch
        import jax  # only needed when batches go to devices

        return jax.device_put(batch, self.sharding)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches start..len-1 of `epoch`, built `prefetch` ahead in a background thread."""
        order = self.order(epoch)
        if self.prefetch <= 0:
            for i in range(start, len(self)):
                yield self._place(self.batch(epoch, i, order))
            return
        slots: queue.Queue = queue.Queue(self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(epoch, start, order, slots, stop),
                                  name=f"jaxdl-prefetch-epoch{epoch}", daemon=True)
        worker.start()
        try:
            for _ in range(start, len(self)):
                item = slots.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # runs on exhaustion, on close() and when an abandoned generator is collected
            stop.set()
            worker.join()

    def _produce(self, epoch: int, start: int, order: np.ndarray, slots: queue.Queue, stop: threading.Event) -> None:
        try:
            for i in range(start, len(self)):
                if not _offer(slots, self._place(self.batch(epoch, i, order)), stop):
                    return
        except BaseException as exc:  # surface the error in the consumer, not in a silent thread
            _offer(slots, exc, stop)


def check_rows(rows: tuple[int, int] | None, batch_size: int) -> tuple[int, int]:
    """A loader's `rows=`: (start, stop) within the batch, (0, batch_size) for None."""
    start, stop = (0, batch_size) if rows is None else rows
    if not 0 <= start < stop <= batch_size:
        raise ValueError(f"rows ({start}, {stop}) do not lie within a batch of {batch_size}")
    return start, stop


def _offer(slots: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put `item` unless `stop` is set first; False means the consumer went away."""
    while not stop.is_set():
        try:
            slots.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def throughput(loader: Loader, n_batches: int, epoch: int = 0) -> float:
    """Images per second the loader delivers (prefetch thread and device transfer included)."""
    n = min(n_batches, len(loader))
    it = loader.epoch(epoch)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            batch = next(it)
        if loader.sharding is not None:
            import jax

            jax.block_until_ready(batch)
        return n * loader.batch_size / (time.perf_counter() - t0)
    finally:
        it.close()
