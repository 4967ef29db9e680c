"""The optimizer factory: optax optimizers and learning-rate schedules with PyTorch's semantics (see TrainConfig).

Every optimizer jaxdl trains with comes from `optimizer`: the CLIs' training, the grid search, the studies
and the benchmarks, so a test of it against `torch.optim` covers them all.

Fine-tuning (`TrainConfig.freeze`, `head_lr_mult`) splits the parameters into groups by their path, as torch
param groups do: "head" (the architecture's classifier layer, `jaxdl.models.head(arch)`), and "backbone" (the
rest, trained at the base rate) or "frozen" (the rest under freeze="backbone": `optax.set_to_zero`, so exactly
zero updates and no optimizer state). The head's dotted path comes from the model: pass
`head=head_of(model)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdl.train.config import TrainConfig

HEAD, BACKBONE, FROZEN = "head", "backbone", "frozen"


def schedule(config: TrainConfig, steps_per_epoch: int) -> optax.ScalarOrSchedule:
    """Learning rate per optimizer step; the step count lives in the optimizer state, so a resumed run
    continues the schedule where it stopped. A constant rate without warm-up is a plain number, which the state
    then holds as its own value (a grid search sets it per member).

    Warm-up (`warmup_epochs`): linear from 0 to lr, reaching lr at step `warmup`, then the schedule
    (constant, or a cosine decay to 0 over the remaining steps); onecycle takes it as its pct_start."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "constant":
        if not warmup:
            return config.lr
        return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), optax.constant_schedule(config.lr)],
                                    [warmup])
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0 if warmup else config.lr, config.lr, warmup, max(total, warmup + 1))
    # one-cycle: the fast route to a good small-budget result (Smith & Topin), 30% warm-up by default
    pct = warmup / total if warmup else 0.3
    return optax.cosine_onecycle_schedule(total, config.lr, pct_start=pct)


def per_group(config: TrainConfig) -> bool:
    """Whether `config` trains the classifier layer differently from the rest (and so needs its path)."""
    return config.freeze != "none" or config.head_lr_mult != 1.0


def head_of(model: Any) -> str | None:
    """The dotted path of `model`'s classifier layer ("fc", "classifier.6", ...), from its architecture;
    None for a model that is not one of `jaxdl.models`'."""
    from jaxdl import models

    spec = getattr(model, "spec", None)
    arch = getattr(spec, "arch", None)
    return models.head(arch) if isinstance(arch, str) and arch in models.REGISTRY else None


def _name(key: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_labels(head: str, freeze: str = "none") -> Callable[[Any], Any]:
    """`params -> labels`: a tree like `params` holding "head" for every parameter under the dotted path `head`
    (params' path ("classifier", 6, "kernel") is under "classifier.6"), and "backbone" for the others, "frozen"
    under freeze="backbone". Raises ValueError when `head` names no parameter."""
    parts = head.split(".")
    other = FROZEN if freeze == "backbone" else BACKBONE

    def labels(params: Any) -> Any:
        tree = jax.tree_util.tree_map_with_path(
            lambda path, _: HEAD if [_name(k) for k in path[: len(parts)]] == parts else other, params)
        if HEAD not in jax.tree.leaves(tree):
            raise ValueError(f"the classifier layer {head!r} names no parameter of the model: give the model's "
                             "own head (jaxdl.train.optim.head_of(model))")
        return tree

    return labels


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_'s rescaling: every gradient times min(1, max_norm / (norm + 1e-6)), norm
    being the global L2 norm. `optax.clip_by_global_norm` divides by the norm itself, without torch's 1e-6: a
    relative difference of 1e-6 / norm, which Adam's normalisation turns into visibly different weights."""

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, optax.EmptyState]:
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _base(config: TrainConfig, learning_rate: Any) -> optax.GradientTransformation:
    if config.optimizer == "adamw":
        return optax.adamw(learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        base = optax.adam(learning_rate)
    else:
        base = optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.optimizer == "nesterov")
    if config.weight_decay:  # torch.optim.SGD and Adam: g + wd * p, before momentum
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    return base


def optimizer(config: TrainConfig, steps_per_epoch: int, *, head: str | None = None) -> optax.GradientTransformation:
    """`config`'s optimizer. `head` is the dotted path of the model's classifier layer (`head_of(model)`),
    needed only when `per_group(config)` (freeze, head_lr_mult); ValueError when it is then missing.

    The learning rate sits in the state (`optax.inject_hyperparams`): `learning_rate(opt_state)` reads the
    current base value for logs. Without parameter groups the state is the inject_hyperparams state itself
    (`opt_state.hyperparams["learning_rate"]`, which a vmapped search sets per member when constant); with them
    it is a `optax.multi_transform` state whose every trained group holds the base rate (the head's own is
    base * head_lr_mult, applied inside its group), preceded by the clipping's state when clip_grad_norm > 0.

    clip_grad_norm: the trained parameters' whole gradient rescaled to that global norm first (then weight
    decay and momentum), as torch.nn.utils.clip_grad_norm_(trained parameters) before optimizer.step(), whose
    formula `clip_by_global_norm` reproduces.
    """
    lr = schedule(config, steps_per_epoch)
    clip = [clip_by_global_norm(config.clip_grad_norm)] if config.clip_grad_norm else []
    if not per_group(config):
        def make(learning_rate: Any) -> optax.GradientTransformation:
            base = _base(config, learning_rate)
            return optax.chain(*clip, base) if clip else base  # unclipped: the state earlier checkpoints hold

        return optax.inject_hyperparams(make)(learning_rate=lr)
    if head is None:
        raise ValueError("freeze and head_lr_mult need the model's classifier layer: pass "
                         "head=jaxdl.train.optim.head_of(model) (a jaxdl.models architecture)")
    mult = config.head_lr_mult
    groups = {HEAD: optax.inject_hyperparams(lambda learning_rate: _base(config, learning_rate * mult))(learning_rate=lr)}
    if config.freeze == "backbone":
        groups[FROZEN] = optax.set_to_zero()
    else:
        groups[BACKBONE] = optax.inject_hyperparams(lambda learning_rate: _base(config, learning_rate))(learning_rate=lr)
    labels = param_labels(head, config.freeze)
    tx = optax.multi_transform(groups, labels)
    if not clip:
        return tx
    if config.freeze == "backbone":  # the norm of the trained parameters' gradient only
        clip = [optax.masked(clip[0], lambda params: jax.tree.map(lambda label: label != FROZEN, labels(params)))]
    return optax.chain(*clip, tx)


def learning_rate(opt_state: Any) -> float:
    """The current base learning rate held in an `optimizer` state (the backbone's; the head's is
    base * head_lr_mult), for logs. For a vmapped state, use `learning_rates`."""
    return float(learning_rates(opt_state))


def learning_rates(opt_state: Any) -> jax.Array:
    """The base learning rate held in an `optimizer` state, as an array (one value per member when vmapped)."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: hasattr(s, "hyperparams"))
             if hasattr(s, "hyperparams")]
    if not found:
        raise ValueError("this optimizer state holds no learning rate (not made by jaxdl.train.optim.optimizer)")
    return found[0].hyperparams["learning_rate"]
