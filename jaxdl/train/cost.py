"""Model size, compute and memory: parameter count, forward FLOPs per image (XLA's cost analysis), a training
step's memory (estimated before anything is compiled or allocated) and the memory available for it."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdl.models import XLA, with_conv
from jaxdl.train.step import Graphs, State


def param_count(state: State) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(state["params"]))


def flops_per_image(graphs: Graphs, state: State, image_shape: tuple[int, int, int]) -> float:
    """XLA's FLOP count for one eval-mode forward pass of a single image (multiply-add = 2 FLOPs)."""
    # XLA's convolutions: the zero taps of the CPU's space-to-depth form are an implementation cost, not the
    # model's arithmetic
    forward = jax.jit(lambda params, rest, x: with_conv(nnx.merge(graphs.eval, params, rest), XLA)(x))
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    analysis = forward.lower(state["params"], state["rest"], x).cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def step_memory(graphs: Graphs, state: State, batch_size: int, image_shape: tuple[int, int, int]) -> int:
    """Bytes a training step needs, estimated without compiling or allocating anything: the carried state
    (parameters, optimizer moments, statistics), its gradient and next value, the batch, and the activations
    autodiff saves for the backward pass (the residuals of `jax.vjp`, traced abstractly). XLA fuses some of
    those away (measured: its buffers are about half the residuals for ResNet-18), so this is an upper
    estimate: a step it says fits does fit."""
    from jaxdl.train.step import loss

    batch = {"image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32),
             "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
    residuals = jax.eval_shape(lambda p, r, b: jax.vjp(lambda q: loss(q, graphs.train, r, b)[0], p)[1],
                               state["params"], state["rest"], batch)
    size = lambda tree: sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    return size(residuals) + 3 * size(state) + size(batch)


def available_memory(device: jax.Device | None = None) -> int | None:
    """Bytes free for a step on `device`: the accelerator's limit, or the host's available memory on CPU."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else limit - stats.get("bytes_in_use", 0)
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
