"""The optimizer factory: optax optimizers and learning-rate schedules with PyTorch's semantics (see TrainConfig).

Every optimizer jaxdl trains with comes from `optimizer`: the CLIs' training, the grid search, the studies
and the benchmarks, so a test of it against `torch.optim` covers them all.
"""

from __future__ import annotations

import optax

from jaxdl.train.config import TrainConfig


def schedule(config: TrainConfig, steps_per_epoch: int) -> optax.ScalarOrSchedule:
    """Learning rate per optimizer step; the step count lives in the optimizer state, so a resumed run
    continues the schedule where it stopped. A constant rate is a plain number, which the state then holds
    as its own value (a grid search sets it per member)."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0 if warmup else config.lr, config.lr, warmup, max(total, warmup + 1))
    # one-cycle: the fast route to a good small-budget result (Smith & Topin), 30% warm-up by default
    pct = warmup / total if warmup else 0.3
    return optax.cosine_onecycle_schedule(total, config.lr, pct_start=pct)


def optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """`config`'s optimizer. The learning rate sits in the state (`optax.inject_hyperparams`): the current value
    is readable as `state.hyperparams["learning_rate"]` for logs, and a constant one can be set per member of a
    vmapped search."""

    def make(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
        if config.optimizer == "adamw":
            return optax.adamw(learning_rate, weight_decay=config.weight_decay)
        if config.optimizer == "adam":
            base = optax.adam(learning_rate)
        else:
            base = optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.optimizer == "nesterov")
        if config.weight_decay:  # torch.optim.SGD and Adam: g + wd * p, before momentum
            return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
        return base

    return optax.inject_hyperparams(make)(learning_rate=schedule(config, steps_per_epoch))

