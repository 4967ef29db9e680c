"""optax optimizers and learning-rate schedules with PyTorch's semantics (see TrainConfig)."""

from __future__ import annotations

import optax

from jaxdl.train.config import TrainConfig


def schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per optimizer step; the step count lives in the optimizer state, so a resumed run
    continues the schedule where it stopped."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "constant":
        return optax.constant_schedule(config.lr)
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0 if warmup else config.lr, config.lr, warmup, max(total, warmup + 1))
    # one-cycle: the fast route to a good small-budget result (Smith & Topin), 30% warm-up by default
    pct = warmup / total if warmup else 0.3
    return optax.cosine_onecycle_schedule(total, config.lr, pct_start=pct)


def optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    lr = schedule(config, steps_per_epoch)
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=config.weight_decay)
    sgd = optax.sgd(lr, momentum=config.momentum or None, nesterov=config.optimizer == "nesterov")
    if config.weight_decay:  # torch.optim.SGD: g + wd * p, before momentum
        return optax.chain(optax.add_decayed_weights(config.weight_decay), sgd)
    return sgd
