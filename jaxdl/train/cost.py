"""Model size and compute: parameter count and forward FLOPs per image from XLA's cost analysis."""

from __future__ import annotations

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
