"""The convolution forms of `jaxdl.models.ops`, timed on the zoo's layers: the numbers behind its CPU dispatch.

    python -m experiments.bench_conv [--layers lenet5.conv1,lenet5.conv2,cnn.conv1] [--seconds 20]

For each layer (batch 128, 32x32x3 inputs) every form computes the forward pass, and the forward pass with the
gradients a training step needs (the kernel's; the input's too except for a first layer, whose input is data):
XLA's convolution (`conv.conv`, what other layers get), space-to-depth on 2x2 and 4x4 blocks, and patches + one
GEMM. The forms alternate round by round; each figure is the median (and the best) over rounds, in ms.
Whole training steps can rank forms differently from isolated layers (fusion with the ReLU and pooling
around them): `experiments.bench` has the last word.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models import ops
from jaxdl.models.conv import conv

MIN_ROUNDS = 5
# (input NHWC, kernel HWIO, padding, is the model's first layer)
LAYERS = {
    "lenet5.conv1": ((128, 32, 32, 3), (5, 5, 3, 6), 0, True),
    "lenet5.conv2": ((128, 14, 14, 6), (5, 5, 6, 16), 0, False),
    "cnn.conv1": ((128, 32, 32, 3), (3, 3, 3, 32), 0, True),
    "cnn.conv2": ((128, 15, 15, 32), (3, 3, 32, 64), 0, False),
}
FORMS: dict[str, Callable] = {
    "xla": lambda x, w, p: conv(x, w, (1, 1), p),
    "space_to_depth_2": lambda x, w, p: ops.space_to_depth_conv(x, w, p, 2),
    "space_to_depth_4": lambda x, w, p: ops.space_to_depth_conv(x, w, p, 4),
    "gemm": lambda x, w, p: ops.gemm_conv(x, w, (1, 1), p),
}


def programs(form: Callable, padding: int, first: bool) -> dict[str, Callable]:
    pads = ((padding, padding), (padding, padding))
    forward = jax.jit(lambda x, w: form(x, w, pads))
    wrt = (1,) if first else (0, 1)
    # a fixed random cotangent: the loss is linear, so the forward would be dead code without the value
    train = jax.jit(jax.value_and_grad(lambda x, w, g: jnp.vdot(form(x, w, pads), g), argnums=wrt))
    return {"forward": forward, "train": train}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--seconds", type=float, default=20.0, help=f"per layer: rounds (at least {MIN_ROUNDS}) for this long")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print("| layer | form | forward ms | forward best | with gradients ms | with gradients best |")
    print("|---|---|---|---|---|---|")
    for layer in args.layers.split(","):
        x_shape, w_shape, padding, first = LAYERS[layer]
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=w_shape) * 0.1, jnp.float32)
        y = FORMS["xla"](x, w, ((padding, padding), (padding, padding)))
        g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
        runs = {(form, kind): (fn, (x, w) if kind == "forward" else (x, w, g))
                for form, f in FORMS.items() for kind, fn in programs(f, padding, first).items()}
        times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
        for fn, inputs in runs.values():
            jax.block_until_ready(fn(*inputs))  # compile
        began = time.perf_counter()
        while len(times[("xla", "forward")]) < MIN_ROUNDS or time.perf_counter() - began < args.seconds:
            for key, (fn, inputs) in runs.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(*inputs))
                times[key].append(time.perf_counter() - start)
        for form in FORMS:
            cells = [f"{1e3 * f(times[(form, kind)]):.2f}" for kind in ("forward", "train") for f in (statistics.median, min)]
            print(f"| {layer} | {form} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
