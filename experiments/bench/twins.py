"""The models the benches compare: a zoo architecture on `IMAGE` (32x32x3) inputs or another size, and its PyTorch
twin with the same weights.

A speed comparison means something only if both sides compute the same function: `same_function` is the check
a bench runs before it times anything.
"""

from __future__ import annotations

import copy

import jax
import numpy as np
import torch
from flax import nnx

from convert import to_torch
from convert.twins import torch_model
from jaxdl import models
from jaxdl.models import DEFAULT, ConvPolicy

IMAGE = (32, 32, 3)  # the benches' default input (height, width, channels)
NUM_CLASSES = 10
LOGIT_RTOL = 1e-3  # of the largest logit; float32 twins agree within 1e-4 of it (tests/test_equivalence.py)


def create(arch: str, seed: int = 0, conv: ConvPolicy = DEFAULT, image: tuple[int, int, int] = IMAGE) -> nnx.Module:
    """`arch` with 10 classes for square `image` inputs (height, width, channels): the small models are told the
    input size (their dense layers depend on it), torchvision's adapt to any at least
    `models.architecture(arch).min_input_size` (which the small models check themselves)."""
    options = {"in_channels": image[2], "image_size": image[0]} if "image_size" in models.architecture(arch).options else {}
    return models.create(arch, NUM_CLASSES, conv=conv, rngs=nnx.Rngs(seed), **options)


def torch_twin(model: nnx.Module) -> torch.nn.Module:
    """The PyTorch module that computes what `model` computes, holding its weights (loaded strictly)."""
    spec = models.spec(model)
    twin = torch_model(spec.arch, spec.num_classes, **dict(spec.options))
    twin.load_state_dict(to_torch(model))
    return twin


def torch_images(x: np.ndarray) -> torch.Tensor:
    """NHWC images as PyTorch takes them: an NCHW view of the same memory (channels-last strides, no copy)."""
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def same_logits(arch: str, ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """`max_abs_logit_diff` and `logit_scale` (the largest |logit|) of jaxdl's and PyTorch's logits on the same
    batch; raises if they differ by more than `LOGIT_RTOL` of the scale, since timings of two different
    functions (wrong weights, another layout, a broken fast path) compare nothing."""
    diff, scale = float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())
    if not diff <= LOGIT_RTOL * scale:  # written so that NaN fails too
        raise RuntimeError(f"{arch}: jaxdl's and PyTorch's logits differ by up to {diff:.3g} (largest logit "
                           f"{scale:.3g}, tolerance {LOGIT_RTOL:g} of it): the two sides do not compute the same "
                           "function, so their timings would not compare")
    return {"max_abs_logit_diff": diff, "logit_scale": scale}


def same_function(model: nnx.Module, twin: torch.nn.Module, x: np.ndarray) -> dict[str, float]:
    """`same_logits` of `model` and its PyTorch twin on the NHWC batch `x`, in eval mode and float32 on the CPU
    (TF32 or bf16 on an accelerator would blur the check). Works on copies: the modules a bench times keep their
    device and mode."""
    graphdef, state = nnx.split(model)
    ours = nnx.merge(graphdef, jax.device_get(state))
    ours.eval()
    with jax.default_device(jax.devices("cpu")[0]):
        ours_logits = np.asarray(ours(x))
    theirs = copy.deepcopy(twin).cpu().eval()
    with torch.inference_mode():
        theirs_logits = theirs(torch_images(x)).numpy()
    return same_logits(models.spec(model).arch, ours_logits, theirs_logits)
