"""A jaxdl model and its PyTorch twin with the same weights, built fast, and jaxdl's eval logits.

`twins.create` initialises a model eagerly, op by op (ResNet-18 takes ~10 s on the project's CPU), while a
PyTorch model initialises in a fraction of that; so the pair is built the converter's way instead: a fresh
PyTorch model (`convert.twins.torch_model`), converted (`convert.from_torch`), and the reference twin taken back
from the jaxdl model (`twins.torch_twin`, through `convert.to_torch`), so both conversions are on the path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from convert import from_torch
from convert.twins import torch_model
from experiments.bench import twins
from jaxdl.models import architecture
from jaxdl.train import step


def build(arch: str, seed: int = 0, *, random_bn: bool = False, dropout: bool = True
          ) -> tuple[nnx.Module, torch.nn.Module]:
    """`arch` with 10 classes in jaxdl and its twin (on the CPU). random_bn: BatchNorm scales, shifts and running
    statistics drawn at random (so eval mode is not an identity); dropout=False: dropout off in both (random masks
    cannot agree across frameworks)."""
    record = architecture(arch)
    options = {"in_channels": twins.IMAGE[2], "image_size": twins.IMAGE[0]} if "image_size" in record.options else {}
    if not dropout and "dropout" in record.options:
        options["dropout"] = 0.0
    torch.manual_seed(seed)
    source = torch_model(arch, twins.NUM_CLASSES, **options)
    if random_bn:
        with torch.no_grad():
            for m in source.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    model = from_torch(source.state_dict(), arch, twins.NUM_CLASSES, seed=seed, **options)
    return model, twins.torch_twin(model)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _eval_logits(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State, batch: dict, bf16: bool) -> jax.Array:
    return step.loss(params, graphdef, rest, batch, compute_dtype=jnp.bfloat16 if bf16 else None)[1][0]


def eval_logits(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State, x: np.ndarray, bf16: bool = False
                ) -> np.ndarray:
    """Eval-mode logits of the eval graph `graphdef` with `params` and `rest`, through the library's own loss
    (`step.loss`; bf16 by its compute_dtype, exactly as the Trainer's steps cast), as float32 on the host."""
    batch = {"image": x, "label": np.zeros(len(x), np.int32)}
    return np.asarray(_eval_logits(graphdef, params, rest, batch, bf16), np.float32)


def model_logits(model: nnx.Module, x: np.ndarray, bf16: bool = False) -> np.ndarray:
    """`eval_logits` of `model` (left as it is) in eval mode."""
    model = nnx.clone(model)
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return eval_logits(graphdef, params, rest, x, bf16)
