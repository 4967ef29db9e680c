"""The pure, jitted train and eval steps: `(graphdef, state, batch) -> (state, metrics)`.

Following the NNX performance guide, the model is split once into a static GraphDef and a pytree of arrays;
the steps merge it back inside `jax.jit`, so no Python object graph is traversed per step. The carried state
is one pytree {params, rest (BatchNorm statistics, dropout RNG counters), opt (optax state)}, donated to the
step so its buffers are updated in place; with TrainConfig.ema it also holds "ema", the moving average of the
weights ({"params", "stats"}: parameters and BatchNorm statistics), which evaluation and `merge` then use.

Mixed precision casts the float32 master parameters and the inputs to bfloat16 inside the step; gradients
flow back through the cast as float32, and BatchNorm statistics are computed and stored in float32 (see
layers.BatchNorm2d), so only the forward/backward arithmetic is in bfloat16.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxdl.models.layers import BatchNorm2d
from jaxdl.train import optim
from jaxdl.train.config import TrainConfig

State = dict[str, Any]
Batch = dict[str, jax.Array]


@dataclass(frozen=True)
class Graphs:
    """The model's static structure in training mode (batch statistics, dropout on; with freeze_bn, BatchNorm
    on its running statistics) and in eval mode."""

    train: nnx.GraphDef
    eval: nnx.GraphDef


def freeze_batchnorm(model: nnx.Module) -> nnx.Module:
    """Put every BatchNorm of `model` (in place) on its running statistics, never updating them, whatever the
    model's mode; dropout is left as it is. Returns `model`."""
    for _, module in nnx.iter_graph(model):
        if isinstance(module, (BatchNorm2d, nnx.BatchNorm)):
            module.use_running_average = True
    return model


def split(model: nnx.Module, tx: optax.GradientTransformation, *,
          config: TrainConfig | None = None) -> tuple[Graphs, State]:
    """GraphDefs and the initial carried state of `model`, which is left as it was (mode included).

    With `config`: freeze_bn builds the train graph with BatchNorm on its running statistics (dropout still
    on), and ema > 0 adds state["ema"], the average's starting value (a copy of the weights, as timm's)."""
    model = nnx.clone(model)
    model.train()
    if config is not None and config.freeze_bn:
        freeze_batchnorm(model)
    train_graph, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    eval_graph, _, _ = nnx.split(model, nnx.Param, ...)
    state = {"params": params, "rest": rest, "opt": tx.init(params)}
    if config is not None and config.ema:
        # copies: the state is donated, and one buffer cannot be donated twice
        state["ema"] = jax.tree.map(jnp.array, {"params": params, "stats": nnx.filter_state(rest, nnx.BatchStat)})
    return Graphs(train_graph, eval_graph), state


def eval_weights(state: State, *, ema: bool = True) -> tuple[nnx.State, nnx.State]:
    """(params, rest) to evaluate or save: the moving average's when `state` carries one and `ema`, else the
    trained ones (ema=False: the raw weights of the last step)."""
    if not ema or "ema" not in state:
        return state["params"], state["rest"]
    others = nnx.filter_state(state["rest"], nnx.Not(nnx.BatchStat))
    return state["ema"]["params"], nnx.merge_state(others, state["ema"]["stats"])


def merge(graphs: Graphs, state: State, *, ema: bool = True) -> nnx.Module:
    """The model with `state`'s weights, in eval mode (e.g. to save or convert after training): with
    TrainConfig.ema the moving average (timm's ModelEmaV2 model), or the raw trained weights with ema=False."""
    return nnx.merge(graphs.eval, *eval_weights(state, ema=ema))


def update_ema(average: State, params: nnx.State, rest: nnx.State, decay: float) -> State:
    """average <- decay * average + (1 - decay) * new, for the parameters and the BatchNorm statistics, computed
    as average + (1 - decay) * (new - average) (torch's lerp_, timm's ModelEmaV3), so a weight that does not
    change (frozen) keeps its exact value."""
    new = {"params": params, "stats": nnx.filter_state(rest, nnx.BatchStat)}
    return jax.tree.map(lambda a, x: a + (1.0 - decay) * (x.astype(a.dtype) - a), average, new)


def _cast(tree: Any, dtype: jnp.dtype | None) -> Any:
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if _is_float(x) else x, tree)


def _is_float(x: jax.Array) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jnp.floating)


def _at_least_f32(x: jax.Array) -> jax.Array:
    """bf16 logits are promoted for the loss; float64 ones (the equivalence tests') stay float64."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def loss(params: nnx.State, graphdef: nnx.GraphDef, rest: nnx.State, batch: Batch, *, label_smoothing: float = 0.0,
         compute_dtype: jnp.dtype | None = None) -> tuple[jax.Array, tuple[jax.Array, nnx.State]]:
    """The training loss of `params` on `batch`, with the logits and the new non-parameter state (BatchNorm
    statistics) of the forward pass: the (weighted) batch mean of the label-smoothed cross-entropy.

    The batch holds "image" and "label", and optionally "weight": a per-sample 0/1 weight (a grid search gives
    0 to the samples outside a fold's training part, so every fold walks the same static-shaped batches). The
    loss is then sum(weight * ce) / max(sum(weight), 1); BatchNorm still sees every sample of the batch.
    """
    # copy=True: fresh Variables in this trace, which BatchNorm may then update
    model = nnx.merge(graphdef, _cast(params, compute_dtype), rest, copy=True)
    logits = _at_least_f32(model(_cast(batch["image"], compute_dtype)))
    targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], logits.shape[-1], dtype=logits.dtype), label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    weight = batch.get("weight")
    value = losses.mean() if weight is None else jnp.sum(weight * losses) / jnp.maximum(jnp.sum(weight), 1.0)
    return value, (logits, nnx.state(model, nnx.Not(nnx.Param)))


def train_step(graphdef: nnx.GraphDef, state: State, batch: Batch, *, tx: optax.GradientTransformation,
               label_smoothing: float = 0.0, compute_dtype: jnp.dtype | None = None,
               ema_decay: float = 0.0) -> tuple[State, dict[str, jax.Array]]:
    """One optimizer step on `loss`: the only place jaxdl differentiates a training loss and updates weights.
    Pure, so it is jitted (training), scanned and vmapped (the grid search over folds and configurations) alike.

    A state carrying "ema" (`split` with TrainConfig.ema) has its average updated after the step with
    `ema_decay` (TrainConfig.ema)."""
    if ema_decay and "ema" not in state:
        raise ValueError("ema_decay is set but the state carries no average: build it with split(model, tx, config=config)")
    (value, (logits, rest)), grads = jax.value_and_grad(loss, has_aux=True)(
        state["params"], graphdef, state["rest"], batch, label_smoothing=label_smoothing, compute_dtype=compute_dtype)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    rest = jax.tree.map(lambda new, old: new.astype(old.dtype) if _is_float(old) else new, rest, state["rest"])
    labels, weight = batch["label"], batch.get("weight")
    hits = logits.argmax(-1) == labels
    if weight is None:
        metrics = {"loss": value, "correct": jnp.sum(hits), "count": jnp.asarray(labels.shape[0])}
    else:
        metrics = {"loss": value, "correct": jnp.sum(weight * hits), "count": jnp.sum(weight)}
    new = {"params": params, "rest": rest, "opt": opt}
    if "ema" in state:
        new["ema"] = update_ema(state["ema"], params, rest, ema_decay)
    return new, metrics


def eval_step(graphdef: nnx.GraphDef, state: State, batch: Batch, *, compute_dtype: jnp.dtype | None = None,
              ema: bool = True) -> dict[str, jax.Array]:
    """Predictions and masked loss sums (padding rows of the last batch count for nothing), with the moving
    average's weights when the state carries one (ema=False: the raw ones)."""
    params, rest = eval_weights(state, ema=ema)
    model = nnx.merge(graphdef, _cast(params, compute_dtype), rest)
    logits = _at_least_f32(model(_cast(batch["image"], compute_dtype)))
    mask = batch["mask"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    pred = logits.argmax(-1)
    return {"loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)), "correct": jnp.sum((pred == batch["label"]) & mask),
            "count": jnp.sum(mask), "pred": pred}


@functools.lru_cache(maxsize=16)
def compile_steps(config: TrainConfig, steps_per_epoch: int, replicated: jax.sharding.Sharding, *,
                  head: str | None = None):
    """(tx, jitted train step, jitted eval step) for `config`; `head` is the model's classifier layer
    (`optim.head_of(model)`), which `optim.optimizer` needs for freeze and head_lr_mult.

    The state is donated; outputs are replicated, inputs keep the sharding they come with (batch split over
    the mesh's data axis), so the same code runs on one device or many. Cached, so that a second model of the
    same architecture and settings (a resumed run, a test) reuses the compiled programs: their cache is keyed
    by the GraphDef, which is equal for equal structures.
    """
    tx = optim.optimizer(config, steps_per_epoch, head=head)
    dtype = jnp.bfloat16 if config.mixed_precision else None
    train = jax.jit(functools.partial(train_step, tx=tx, label_smoothing=config.label_smoothing, compute_dtype=dtype,
                                      ema_decay=config.ema),
                    static_argnums=0, donate_argnums=1, out_shardings=replicated)
    evaluate = jax.jit(functools.partial(eval_step, compute_dtype=dtype), static_argnums=0, out_shardings=replicated)
    return tx, train, evaluate
