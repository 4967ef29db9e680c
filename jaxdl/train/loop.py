"""The epoch loop around the jitted steps: progress, throughput, per-epoch checkpoints, resume, NaN stop.

A resumed run is the same computation as an uninterrupted one: the state (parameters, BatchNorm statistics,
dropout RNG counters, optimizer moments and step count, hence the schedule position) comes back from the
checkpoint, and the input pipeline's batches are a pure function of (seed, epoch).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Collection, Iterator
import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxdl.train import optim, parallel, step
from jaxdl.train.checkpoint import CheckpointMismatch, Checkpoints
from jaxdl.train.rundir import RunExists
from jaxdl.train.config import TrainConfig


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the run stopped and its last good checkpoint is kept."""


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: np.ndarray
    labels: np.ndarray
    images_per_s: float


class Loader(Protocol):
    """What the loop reads batches from (`jaxdl.data.Loader` is one): a fixed number of batches per epoch,
    each a pure function of (epoch, index), so a resumed run sees the batches it would have seen."""

    batch_size: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]: ...


class Trainer:
    """A model's graphs, its carried state and the compiled steps, laid out on `mesh`.

    The model passed in is not changed: training works on the carried state, and `trainer.model` is the
    model with the current weights (after `fit`, the trained ones).

    The loop never waits for a step to finish before queueing the next (on an accelerator that wait idles the
    device): metrics are read back every `read_every` steps and at the end of an epoch, so a NaN or Inf loss
    stops training within `read_every` steps, naming the first bad step, before the epoch's checkpoint.
    """

    def __init__(self, model: nnx.Module, config: TrainConfig, steps_per_epoch: int, *,
                 mesh: jax.sharding.Mesh | None = None, progress: bool = True, name: str = "",
                 read_every: int = 25) -> None:
        if read_every < 1:
            raise ValueError(f"read_every must be at least 1, got {read_every}")
        self.config, self.steps_per_epoch, self.progress, self.name = config, steps_per_epoch, progress, name
        self.read_every = read_every
        self.mesh = parallel.mesh() if mesh is None else mesh
        parallel.check_batch_size(config.batch_size, self.mesh)
        self.replicated, self.sharded = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
        tx, self.train_step, self.eval_step = step.compile_steps(config, steps_per_epoch, self.replicated,
                                                                 head=optim.head_of(model))
        self.graphs, state = step.split(model, tx, config=config)
        self.state = parallel.place(state, self.replicated, copy=True)  # donated by every step
        self.history: list[dict[str, Any]] = []

    @property
    def model(self) -> nnx.Module:
        """The model carrying the current weights (after `fit`: the trained ones; their moving average when
        config.ema is on), in eval mode; a new object, detached from the trainer, on every access."""
        return step.merge(self.graphs, jax.device_get(self.state))

    @property
    def raw_model(self) -> nnx.Module:
        """`model` with the trained weights themselves, not their moving average."""
        return step.merge(self.graphs, jax.device_get(self.state), ema=False)

    def fit(self, loader: Loader, checkpoints: Checkpoints | None = None, *, resume: bool = False,
            overwrite: bool = False, identity: dict[str, Any] | None = None, may_change: Collection[str] = (),
            validation: Loader | None = None, early_stop: int = 0,
            on_epoch: Callable[[Trainer, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Train for config.epochs; with `checkpoints`, save after every epoch.

        With `validation` (an eval loader), every epoch's record carries val_loss and val_accuracy, and
        `best_epoch()` names the epoch of the best validation accuracy; `early_stop` N > 0 ends training after N
        epochs without a better one. `on_epoch(trainer, record)` runs after each epoch's checkpoint, e.g. to
        write a log or save the best model. All of it is read from the history, so a resumed run stops, logs
        and picks its best exactly as an uninterrupted one.

        `checkpoints` holding an earlier run is continued (`resume`) or replaced (`overwrite`), never silently:
        neither raises RunExists. A resume checks that the run is the same one: the TrainConfig and `identity`
        (what else defines the run, e.g. its data, input size and starting weights) must equal the saved ones,
        except the keys in `may_change` (e.g. "lr" after a diverging loss), whose change is recorded in the
        history. A damaged newest checkpoint is skipped (one warning) for the newest intact one.
        """
        if len(loader) != self.steps_per_epoch:
            raise ValueError(f"loader has {len(loader)} batches per epoch, the schedule was built for {self.steps_per_epoch}")
        first, self._identity, self._changed = 0, dict(identity or {}), {}
        if checkpoints is not None and checkpoints.latest_epoch() is not None:
            if resume:
                first = self._restore(checkpoints, set(may_change))
            elif overwrite:
                checkpoints.clear()
            else:
                raise RunExists(f"{checkpoints.directory} holds checkpoints of an earlier run: resume it or overwrite it")
        for epoch in range(first, self.config.epochs):
            if early_stop and self._stale_epochs() >= early_stop:
                break
            record = self._epoch(loader, epoch, checkpoints) | {"lr": optim.learning_rate(self.state["opt"])}
            if validation is not None:
                result = self.evaluate(validation)
                record |= {"val_loss": result.loss, "val_accuracy": result.accuracy}
            self.history.append(record | self._changed)
            self._changed = {}
            if self.progress and jax.process_index() == 0:
                tqdm.write(f"{self.name or 'epoch'} {epoch + 1}/{self.config.epochs}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in record.items() if k != "epoch" and isinstance(v, float)), file=sys.stderr)
            if checkpoints is not None:
                checkpoints.save(epoch, self.state, self._record())
            if on_epoch is not None:
                on_epoch(self, self.history[-1])
        return self.history

    def best_epoch(self) -> int | None:
        """The (1-based) epoch of the best validation accuracy so far (the earliest among equals), or None."""
        scored = [h for h in self.history if "val_accuracy" in h]
        return max(scored, key=lambda h: (h["val_accuracy"], -h["epoch"]))["epoch"] if scored else None

    def _stale_epochs(self) -> int:
        """Epochs since the best validation accuracy (0 without validation)."""
        best = self.best_epoch()
        return 0 if best is None else self.history[-1]["epoch"] - best

    def _record(self) -> dict[str, Any]:
        """What a checkpoint says about its run, besides the arrays."""
        return {"config": self.config.to_dict(), "identity": self._identity, "history": self.history}

    def _restore(self, checkpoints: Checkpoints, may_change: set[str]) -> int:
        self._check_same_run(checkpoints, checkpoints.meta(), may_change)  # before loading arrays of another shape
        self.state, meta, epoch = checkpoints.restore_latest_good(self.state)
        self._check_same_run(checkpoints, meta, may_change)  # the one restored (an older one if the newest was bad)
        self.history = meta["history"][: epoch + 1]
        return len(self.history)

    def _check_same_run(self, checkpoints: Checkpoints, meta: dict[str, Any], may_change: set[str]) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # fields newer than the checkpoint
        saved = {**defaults, **meta.get("config", {}), **meta.get("identity", {})}
        now = {**self._record()["config"], **self._identity}
        changed = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)}
        refused = {k: v for k, v in changed.items() if k not in may_change}
        if refused:
            listed = ", ".join(f"{k}={old} (now {new})" for k, (old, new) in refused.items())
            raise CheckpointMismatch(f"cannot resume {checkpoints.directory}: it was trained with other settings: "
                                     f"{listed}; rerun with its settings, or start afresh with --overwrite")
        self._changed = {"changed": {k: list(v) for k, v in changed.items()}} if changed else {}

    def _epoch(self, loader: Loader, epoch: int, checkpoints: Checkpoints | None) -> dict[str, Any]:
        """One epoch. Nothing is read back per step: the metrics stay on the device and are read every
        `read_every` steps (progress, NaN check) and at the end, so the host queues step i+1 while step i
        runs; the batches go to the device two steps ahead (`parallel.prefetch`)."""
        batches = parallel.prefetch(loader.epoch(epoch), self._to_device)
        bar = tqdm(batches, total=len(loader), desc=f"{self.name} epoch {epoch + 1}/{self.config.epochs}",
                   disable=not self.progress or jax.process_index() != 0, leave=False, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
        totals = np.zeros(3)  # loss * count, correct, count over the steps read so far
        pending: list[dict[str, jax.Array]] = []
        start = time.perf_counter()
        steady_start, first_count = None, 0.0
        with contextlib.closing(batches):
            for i, batch in enumerate(bar):
                self.state, metrics = self.train_step(self.graphs.train, self.state, batch)
                pending.append(metrics)
                if steady_start is None:  # the first step compiles: wait for it, and leave it out of the rate
                    first_count = float(jax.device_get(metrics["count"]))
                    steady_start = time.perf_counter()
                if len(pending) == self.read_every or i + 1 == len(loader):
                    totals += self._read(pending, epoch, i + 1, checkpoints)
                    pending = []
                    rate = (totals[2] - first_count) / max(time.perf_counter() - steady_start, 1e-9)
                    bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}", acc=f"{totals[1] / totals[2]:.3f}",
                                    img_s=f"{rate:.0f}", refresh=False)
        end = time.perf_counter()
        steady = totals[2] - first_count
        rate = steady / (end - steady_start) if steady else totals[2] / (end - start)
        return {"epoch": epoch + 1, "train_loss": float(totals[0] / totals[2]),
                "train_accuracy": float(totals[1] / totals[2]), "seconds": end - start, "images_per_s": float(rate)}

    def _to_device(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return parallel.to_device(batch, self.sharded, self.config.batch_size)

    def _read(self, pending: list[dict[str, jax.Array]], epoch: int, last: int,
              checkpoints: Checkpoints | None) -> np.ndarray:
        """[loss * count, correct, count] summed over the steps `last - len(pending) + 1 .. last` of `epoch`
        (1-based), read in one transfer; NonFiniteLoss naming the first bad step, if a loss is NaN or Inf."""
        values = jax.device_get(pending)
        losses = np.array([v["loss"] for v in values], np.float64)
        counts = np.array([v["count"] for v in values], np.float64)
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            first = last - len(pending) + 1
            saved = checkpoints.latest_epoch() if checkpoints is not None else None
            kept = (f"last good checkpoint: epoch {saved + 1} in {checkpoints.directory}" if saved is not None
                    else "no checkpoint was kept")
            raise NonFiniteLoss(f"{self.name or 'training'}: loss became {losses[bad[0]]} at epoch {epoch + 1}, "
                                f"step {first + bad[0]} (steps {first}-{last} checked together); stopped ({kept})")
        return np.array([np.dot(losses, counts), sum(float(v["correct"]) for v in values), counts.sum()])

    def evaluate(self, loader: Loader) -> Evaluation:
        """Loss, accuracy and every prediction on `loader` (an eval loader: no sample dropped)."""
        parallel.check_batch_size(loader.batch_size, self.mesh)
        preds, labels, loss_sum, correct, count = [], [], 0.0, 0, 0
        start, steady_start, steady = time.perf_counter(), None, 0
        batches = parallel.prefetch(loader.epoch(0), lambda b: parallel.to_device(b, self.sharded, loader.batch_size))
        with contextlib.closing(batches):
            for placed in batches:  # the next batch travels to the device while this one is evaluated
                out = self.eval_step(self.graphs.eval, self.state, placed)
                out = parallel.to_host(out | {"label": placed["label"], "mask": placed["mask"]})
                mask = out["mask"]
                preds.append(out["pred"][mask])
                labels.append(out["label"][mask])
                loss_sum, correct, count = loss_sum + float(out["loss_sum"]), correct + int(out["correct"]), count + int(out["count"])
                if steady_start is None:
                    steady_start = time.perf_counter()
                else:
                    steady += int(mask.sum())  # the whole global batch
        rate = steady / (time.perf_counter() - steady_start) if steady else count / (time.perf_counter() - start)
        return Evaluation(loss_sum / count, correct / count, np.concatenate(preds), np.concatenate(labels), rate)
