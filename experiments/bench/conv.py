"""The CPU convolution forms of `jaxdl.models.ConvPolicy`, timed on the zoo's layers: the numbers behind its dispatch.

    python -m experiments.bench.conv [--layers lenet5.conv1,lenet5.conv2,cnn.conv1] [--seconds 20] [--json FILE]

For each layer (the zoo's, at 32 px with batch 128 and at 224 px with batch 16) every form computes the
forward pass, and the forward pass with the gradients a training step needs (the kernel's; the input's too
except for a first layer, whose input is data): oneDNN's kernels (`onednn`, `jaxdl.onednn`, when built), XLA's
convolution written canonically (`canonical`: `conv.conv`), space-to-depth on 2x2 and 4x4 blocks, and patches +
one GEMM. Each form runs through a `ConvPolicy` whose thresholds force it, checked with `policy.form` before
timing, so what is timed is what the models run. The forms alternate round by round, a round being ~0.1 s of
calls back to back; each figure is the median (and the best) over rounds, in ms. Whole training steps can rank
forms differently from isolated layers (fusion with the ReLU and pooling around them): `experiments.bench` has
the last word.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import harness
from jaxdl import cli, onednn
from jaxdl.models import ConvPolicy
from jaxdl.runtime import use_fast_cpu_flags

MODULE = "experiments.bench.conv"
MIN_ROUNDS = 5
# A round of one form lasts about this long: the first calls after another program's run slower (the other's
# threads still spin), and a model's step runs its layers back to back.
ROUND_S = 0.1
# (input NHWC, kernel HWIO, padding, is the model's first layer)
LAYERS = {
    "lenet5.conv1": ((128, 32, 32, 3), (5, 5, 3, 6), 0, True),
    "lenet5.conv2": ((128, 14, 14, 6), (5, 5, 6, 16), 0, False),
    "cnn.conv1": ((128, 32, 32, 3), (3, 3, 3, 32), 0, True),
    "cnn.conv2": ((128, 15, 15, 32), (3, 3, 32, 64), 0, False),
    # ResNets at 32 px: the 3x3 layers over 2x2 and 1x1 maps, and ResNet-50's pointwise layers
    "resnet18.layer3@32": ((128, 2, 2, 256), (3, 3, 256, 256), 1, False),
    "resnet18.layer4@32": ((128, 1, 1, 512), (3, 3, 512, 512), 1, False),
    "resnet50.layer1.conv1@32": ((128, 8, 8, 256), (1, 1, 256, 64), 0, False),
    "resnet50.layer1.conv3@32": ((128, 8, 8, 64), (1, 1, 64, 256), 0, False),
    "resnet50.layer3.conv1@32": ((128, 2, 2, 1024), (1, 1, 1024, 256), 0, False),
    # and at 224 px (batch 16)
    "resnet18.layer1@224": ((16, 56, 56, 64), (3, 3, 64, 64), 1, False),
    "resnet18.layer4@224": ((16, 7, 7, 512), (3, 3, 512, 512), 1, False),
    "resnet50.layer1.conv1@224": ((16, 56, 56, 256), (1, 1, 256, 64), 0, False),
    "resnet50.layer3.conv1@224": ((16, 14, 14, 1024), (1, 1, 1024, 256), 0, False),
}
ANY = 1 << 30  # a threshold every layer is under
# name: (the form ConvPolicy.form must report, a CPU policy that takes it for every layer above)
FORMS: dict[str, tuple[str, ConvPolicy]] = {
    "onednn": ("onednn", ConvPolicy("cpu", gemm_max_output=0, gemm_pointwise=False, space_to_depth_block=0)),
    "canonical": ("canonical", ConvPolicy("cpu", gemm_max_output=0, gemm_pointwise=False, space_to_depth_block=0,
                                          onednn=False)),
    "space_to_depth_2": ("space_to_depth", ConvPolicy("cpu", gemm_max_output=0, gemm_pointwise=False,
                                                      space_to_depth_max_out_channels=ANY, space_to_depth_block=2,
                                                      onednn=False)),
    "space_to_depth_4": ("space_to_depth", ConvPolicy("cpu", gemm_max_output=0, gemm_pointwise=False,
                                                      space_to_depth_max_out_channels=ANY, space_to_depth_block=4,
                                                      onednn=False)),
    "gemm": ("gemm", ConvPolicy("cpu", gemm_max_output=ANY, onednn=False)),
}
KINDS = ("forward", "train")


def available_forms() -> dict[str, tuple[str, ConvPolicy]]:
    """FORMS, less oneDNN's where its library is not built (python -m jaxdl.onednn build)."""
    return {name: f for name, f in FORMS.items() if f[0] != "onednn" or onednn.available()}


def programs(policy: ConvPolicy, pads: tuple[tuple[int, int], ...], first: bool) -> dict[str, Callable]:
    """The layer's forward pass, and its value with the gradients a training step takes, compiled under `policy`."""
    forward = jax.jit(lambda x, w: policy(x, w, (1, 1), pads))
    wrt = (1,) if first else (0, 1)
    # a fixed random cotangent: the loss is linear, so the forward would be dead code without the value
    train = jax.jit(jax.value_and_grad(lambda x, w, g: jnp.vdot(policy(x, w, (1, 1), pads), g), argnums=wrt))
    return {"forward": forward, "train": train}


def bench_layer(layer: str, seconds: float, rng: np.random.Generator) -> list[dict]:
    """One row per form: median and best ms of each kind over interleaved rounds."""
    x_shape, w_shape, padding, first = LAYERS[layer]
    pads = ((padding, padding), (padding, padding))
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape) * 0.1, jnp.float32)
    out = jax.eval_shape(lambda x, w: FORMS["canonical"][1](x, w, (1, 1), pads), x, w)
    g = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    runs = {}
    for name, (form, policy) in available_forms().items():
        if policy.form(x_shape, w_shape, (1, 1), pads) != form:
            raise RuntimeError(f"{layer}: the policy meant to force {form!r} now gives "
                               f"{policy.form(x_shape, w_shape, (1, 1), pads)!r}: update FORMS")
        for kind, fn in programs(policy, pads, first).items():
            inputs = (x, w) if kind == "forward" else (x, w, g)
            runs[(name, kind)] = (lambda fn=fn, inputs=inputs: jax.block_until_ready(fn(*inputs)))
    steps = {}
    for key, run in runs.items():
        run()  # compile
        steps[key] = max(1, math.ceil(ROUND_S / harness.timed(run)))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    began = time.perf_counter()
    while min(map(len, times.values())) < MIN_ROUNDS or time.perf_counter() - began < seconds:
        for key, run in runs.items():
            times[key].append(harness.timed(run, steps=steps[key]))
    return [{"layer": layer, "form": name} | {f"{kind}_{stat.__name__}_ms": 1e3 * stat(times[(name, kind)])
                                              for kind in KINDS for stat in (statistics.median, min)}
            for name in available_forms()]


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--seconds", type=cli.natural_float, default=20.0, help=f"per layer: rounds (at least {MIN_ROUNDS}) for this long")
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    for layer in args.layers.split(","):
        if layer not in LAYERS:
            p.error(f"unknown layer {layer!r}: choose from {', '.join(LAYERS)}")
    header = harness.header(MODULE, argv)
    print(harness.describe(header["machine"]) + "\n")
    harness.print_header("layer", "form", "forward ms", "forward best", "with gradients ms", "with gradients best")
    rng = np.random.default_rng(0)
    rows = []
    for layer in args.layers.split(","):
        for row in bench_layer(layer, args.seconds, rng):
            rows.append(row)
            harness.print_row(layer, row["form"], *(f"{row[f'{kind}_{stat}_ms']:.2f}"
                                                    for kind in KINDS for stat in ("median", "min")))
    if args.json:
        harness.write_json(args.json, header | {"rows": rows})


if __name__ == "__main__":
    harness.run(main, MODULE)
