"""Building blocks with PyTorch's semantics, so a converted model computes what torchvision computes.

Flax's defaults differ from PyTorch's in three places that change numbers: 'SAME' padding is asymmetric for
stride-2 layers on even inputs, BatchNorm keeps the biased variance in its running statistics, and there is
no adaptive average pooling. Everything here is written so the conversion is a pure relayout of tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdl.models import ops

Array = jax.Array


class Sequential(nnx.List):
    """`torch.nn.Sequential` twin: its children live at integer paths (`features/0/kernel`), as in a state_dict."""

    def __call__(self, x: Array) -> Array:
        for layer in self:
            x = layer(x)
        return x


# torchvision's two initialisation schemes, so that models trained from scratch start where PyTorch's do.
kaiming_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
torch_default = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias(fan_in: int) -> nnx.Initializer:
    """PyTorch draws biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias shape alone does not know fan_in."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    bias: bool = True,
    *,
    kernel_init: nnx.Initializer = torch_default,
    conv: ops.ConvPolicy = ops.DEFAULT,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """`nn.Conv2d` with PyTorch's symmetric padding; the kernel is HWIO, the NHWC layout XLA prefers.
    `conv` chooses the form the convolution runs in (see `ops.ConvPolicy`), never its result."""
    fan_in = in_channels * kernel_size * kernel_size
    bias_init = torch_bias(fan_in) if kernel_init is torch_default else nnx.initializers.zeros
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        strides=stride,
        padding=((padding, padding), (padding, padding)),
        use_bias=bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        conv_general_dilated=conv,
        rngs=rngs,
    )


def linear(
    in_features: int,
    out_features: int,
    *,
    kernel_init: nnx.Initializer = torch_default,
    bias_init: nnx.Initializer | None = None,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """`nn.Linear`; the kernel is (in, out), the transpose of PyTorch's weight."""
    if bias_init is None:
        bias_init = torch_bias(in_features)
    return nnx.Linear(in_features, out_features, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)


class BatchNorm2d(nnx.Module):
    """`nn.BatchNorm2d` over the channel (last) axis, with PyTorch's update rule.

    Training normalises with the biased batch variance but stores the unbiased one (n/(n-1)) in the running
    variance, and `momentum` is PyTorch's (weight of the new batch), not Flax's (weight of the old average).
    Statistics are computed in at least float32 whatever the activation dtype, so bf16 training keeps exact stats.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.use_running_average = False
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            n = x.size // x.shape[-1]
            if n < 2:
                raise ValueError(
                    f"BatchNorm2d needs more than one value per channel in training mode (got input {x.shape}): "
                    "use a larger batch or call model.eval()"
                )
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
            mean = xf.mean(axes)
            var = jnp.square(xf - mean).mean(axes)
            m = self.momentum
            self.mean[...] = (1 - m) * self.mean[...] + m * mean
            self.var[...] = (1 - m) * self.var[...] + m * var * (n / (n - 1))
        inv = jax.lax.rsqrt(var + self.eps) * self.scale[...]
        return (x * inv.astype(x.dtype) + (self.bias[...] - mean * inv).astype(x.dtype)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class MaxPool2d:
    """`nn.MaxPool2d` (floor mode): implicit -inf padding and PyTorch's gradient (see `ops.max_pool2d`).

    A frozen dataclass, so equal pools compare equal and equal models share one GraphDef (and compiled steps).
    """

    kernel_size: int
    stride: int
    padding: int = 0

    def __call__(self, x: Array) -> Array:
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)


def max_pool2d(kernel_size: int, stride: int | None = None, padding: int = 0) -> MaxPool2d:
    return MaxPool2d(kernel_size, kernel_size if stride is None else stride, padding)


@functools.lru_cache(maxsize=None)
def _pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Row i averages PyTorch's bin [floor(i*in/out), ceil((i+1)*in/out)); bins overlap when in < out."""
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d(x: Array, output_size: tuple[int, int]) -> Array:
    """`nn.AdaptiveAvgPool2d` for every input size, as two small matrix products over H and W."""
    (h, w), (oh, ow) = x.shape[1:3], output_size
    if (h, w) == (oh, ow):
        return x
    if (oh, ow) == (1, 1):
        return x.mean(axis=(1, 2), keepdims=True)
    ph, pw = _pool_matrix(h, oh), _pool_matrix(w, ow)
    return jnp.einsum("nhwc,ih,jw->nijc", x, ph, pw, precision=jax.lax.Precision.HIGHEST).astype(x.dtype)


def flatten(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)
