"""Convolution and max pooling with PyTorch's numbers, in the form each backend runs fastest.

On CPU, float32 convolutions run on oneDNN's kernels (`jaxdl.onednn`), the ones PyTorch calls, when that
library is built: 1.1-15x faster per layer (with gradients) than XLA:CPU's Eigen convolutions, the fastest
form on 12 of the zoo's 13 timed layers and within noise on the last (`python -m experiments.bench.conv`,
BENCHMARKS.md). Without it, three XLA CPU weak spots get forms of their own (measured with
`python -m experiments.bench` and profiles, see BENCHMARKS.md):

- 3x3 convolutions over 2x2 and 1x1 feature maps (layer3/layer4 at 32x32 input) run 30-45x slower than
  PyTorch. Written as patches + one GEMM (im2col) they run at GEMM speed; autodiff gives the backward as GEMMs
  too. Larger maps keep XLA's convolution, which wins there.
- Convolutions with few output channels (LeNet-5's 3 -> 6, 6 -> 16) run at ~3.5 GFLOP/s. Folding blocks of
  pixels into channels (`space_to_depth_conv`) gives XLA the same convolution with 4-16x the channels on a
  smaller map, which it runs several times faster despite the zero taps this adds.
- 1x1 convolutions: one GEMM over the input itself, whose gradients are GEMMs too.

And on every CPU path: the gradient of `lax.reduce_window` max lowers to select-and-scatter, 4-12x slower than
the formulation below, which also reproduces PyTorch's choice among tied maxima (the first in the window).

GPUs and TPUs keep `lax.conv_general_dilated` (cuDNN and friends) and only the pooling backward changes.
`ConvPolicy` is the one place these choices are made.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl import onednn as onednn_library
from jaxdl.models.conv import conv

Array = jax.Array
Form = Literal["gemm", "space_to_depth", "onednn", "canonical", "xla"]


@dataclasses.dataclass(frozen=True)
class ConvPolicy:
    """Which form each convolution of a model takes: the one place the choice is made.

    A model's layers are built with a policy (`create(arch, conv=...)`, as Flax's ImageNet example passes
    `conv=`), and call it in place of `lax.conv_general_dilated`. Every form computes the same convolution
    (exact against `lax` in float64, derivatives included: tests/test_ops.py); only speed differs.

    backend: "auto" takes the CPU forms when the computation runs on a CPU and XLA's own convolutions on
        GPUs and TPUs (cuDNN and friends); "cpu" takes the CPU forms everywhere, "xla" XLA's everywhere (the
        accelerator path, runnable and testable on a CPU, and the reference for counting a model's FLOPs).
    onednn: every float32 CPU convolution and its derivatives run on oneDNN's kernels (`jaxdl.onednn`,
        the kernels PyTorch calls) when its library is built. Measured on the zoo's layers with their gradients
        (`python -m experiments.bench.conv`, BENCHMARKS.md), oneDNN is the fastest form on 12 of the 13
        timed layers, 1.1-2x ahead of the best other, and within noise of patches + GEMM on the last (3x3
        over a 2x2 map: 0.92x in one run, 1.07x in another), so it takes them all.
    Without oneDNN (onednn=False, the library not built, or another dtype) the forms below share the CPU
    convolutions out by shape:
    gemm_max_output: output maps at most this large (height and width) run as patches + one GEMM; XLA:CPU's
        convolution is 30-45x slower there (BENCHMARKS.md).
    gemm_pointwise: 1x1 convolutions without padding (ResNet-50's bottlenecks and downsamples) run as one GEMM
        over the (strided) input itself, no patches to build; their weight gradient is then a GEMM too, where
        XLA:CPU's convolution would first transpose the activations (BENCHMARKS.md, CPU speed across sizes).
    space_to_depth_max_out_channels, space_to_depth_block: stride-1 convolutions with at most this many
        output channels run on block x block pixel blocks folded into channels (LeNet-5; 0 turns it off).
    The other CPU convolutions go through `conv.conv` in canonical form, XLA's own program at the top level
    whose derivatives stay fast inside loops (the Hessian tools').
    """

    backend: Literal["auto", "cpu", "xla"] = "auto"
    gemm_max_output: int = 2
    gemm_pointwise: bool = True
    space_to_depth_max_out_channels: int = 16
    space_to_depth_block: int = 2
    onednn: bool = True

    def form(self, x_shape: Sequence[int], w_shape: Sequence[int], strides: Sequence[int],
             padding: Sequence[Sequence[int]], dtype=jnp.float32) -> Form:
        """The form a plain NHWC/HWIO convolution of these shapes (and dtype) takes under this policy."""
        cpu = self.backend == "cpu" or (self.backend == "auto" and jax.default_backend() == "cpu")
        if not cpu:
            return "xla"
        if self.onednn and jnp.dtype(dtype) == jnp.float32 and onednn_library.available():
            return "onednn"
        out = [(x_shape[1 + a] + sum(padding[a]) - w_shape[a]) // strides[a] + 1 for a in range(2)]
        if max(out) <= self.gemm_max_output:
            return "gemm"
        if self.gemm_pointwise and tuple(w_shape[:2]) == (1, 1) and all(tuple(p) == (0, 0) for p in padding):
            return "gemm"
        if (self.space_to_depth_block and tuple(strides) == (1, 1)
                and w_shape[3] <= self.space_to_depth_max_out_channels):
            return "space_to_depth"
        return "canonical"

    def __call__(self, lhs: Array, rhs: Array, window_strides: Sequence[int], padding: Sequence[tuple[int, int]],
                 lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                 dimension_numbers=None, feature_group_count: int = 1, precision=None, **kwargs) -> Array:
        """`lax.conv_general_dilated`'s signature, so `nnx.Conv(conv_general_dilated=policy)` calls it."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # Flax always passes out_sharding
        plain = lhs.ndim == 4 and feature_group_count == 1 and not kwargs and all(
            d is None or all(v == 1 for v in d) for d in (lhs_dilation, rhs_dilation))
        strides, pads = tuple(window_strides), tuple(map(tuple, padding))
        form = self.form(lhs.shape, rhs.shape, strides, pads, jnp.result_type(lhs, rhs)) if plain else "xla"
        if form == "gemm":
            return gemm_conv(lhs, rhs, strides, pads, precision)
        if form == "space_to_depth":
            return space_to_depth_conv(lhs, rhs, pads, self.space_to_depth_block, precision)
        if form in ("onednn", "canonical"):
            return conv(lhs, rhs, strides, pads, precision=precision, onednn=form == "onednn")
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision, **kwargs)


DEFAULT = ConvPolicy()  # what every model gets unless told otherwise
XLA = ConvPolicy("xla")  # XLA's convolutions only: the accelerator path, and the reference for FLOP counts


def gemm_conv(x: Array, kernel: Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
              precision=None) -> Array:
    """Convolution as one matrix product over extracted patches (im2col); (i, j, c) order matches HWIO."""
    kh, kw, cin, cout = kernel.shape
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    ho, wo = ((x.shape[1 + a] - kernel.shape[a]) // strides[a] + 1 for a in range(2))
    cols = [view for _, view in _windows(x, (kh, kw), strides, (ho, wo))]
    patches = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
    y = jnp.dot(patches.reshape(-1, kh * kw * cin), kernel.reshape(-1, cout), precision=precision)
    return y.reshape(x.shape[0], ho, wo, cout)


def space_to_depth_conv(x: Array, kernel: Array, padding: tuple[tuple[int, int], ...], block: int,
                        precision=None) -> Array:
    """Stride-1 convolution over `block` x `block` pixel blocks folded into channels (space-to-depth).

    Output block (r, s) depends only on input blocks r..r+kb-1 (and s..s+kb-1), kb = ceil((block + k - 1) / block):
    so the convolution equals a kb x kb one from block^2*C to block^2*D channels on a map `block` times smaller,
    whose kernel holds the original taps at their offsets within the blocks and zeros elsewhere.  On 2x2 blocks
    LeNet-5's 5x5 layers become 3x3 convolutions from 12 to 24 and from 24 to 64 channels: (kb*block)^2/k^2 =
    1.44x the multiply-adds, run 2-3x faster by XLA:CPU, and exact (every output sums the same products, plus zeros).
    """
    (kh, kw, c, d), b = kernel.shape, block
    n, h, w, _ = x.shape
    (top, bottom), (left, right) = padding
    ho, wo = h + top + bottom - kh + 1, w + left + right - kw + 1
    kbh, kbw = -(-(b + kh - 1) // b), -(-(b + kw - 1) // b)  # the kernel's extent, in blocks
    hb, wb = -(-ho // b), -(-wo // b)  # output blocks; the input needs kb - 1 more (zero-padded past the edge)
    x = jnp.pad(x, ((0, 0), (top, (hb + kbh - 1) * b - h - top), (left, (wb + kbw - 1) * b - w - left), (0, 0)))
    x = x.reshape(n, hb + kbh - 1, b, wb + kbw - 1, b, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, hb + kbh - 1, wb + kbw - 1, b * b * c)

    def taps(kb: int, k: int) -> np.ndarray:  # [block offset, input pixel in block, output pixel in block, tap]
        return (b * np.arange(kb)[:, None, None, None] + np.arange(b)[:, None, None] - np.arange(b)[:, None]
                == np.arange(k)).astype(np.float32)

    folded = jnp.einsum("Ipui,Jqvj,ijcd->IJpqcuvd", taps(kbh, kh), taps(kbw, kw), kernel, precision=precision)
    y = conv(x, folded.reshape(kbh, kbw, b * b * c, b * b * d).astype(kernel.dtype), (1, 1), ((0, 0), (0, 0)),
             precision=precision)
    y = y.reshape(n, hb, wb, b, b, d).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb * b, wb * b, d)
    return y[:, :ho, :wo]


def _windows(x: Array, kernel: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int]):
    """(offset, strided view) for each window position, in PyTorch's row-major scan order."""
    n, _, _, c = x.shape
    (kh, kw), (sh, sw), (ho, wo) = kernel, strides, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                                        (1, sh, sw, 1))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def max_pool2d(x: Array, kernel_size: int, stride: int, padding: int) -> Array:
    """`F.max_pool2d` (floor mode, implicit -inf padding) over NHWC; derivatives go to each window's first maximum.

    A custom JVP rather than a custom VJP: reverse mode comes from transposing it, and forward mode keeps
    working, which Hessian-vector products (forward-over-reverse) need.
    """
    return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, kernel_size, kernel_size, 1),
                             (1, stride, stride, 1), ((0, 0), (padding, padding), (padding, padding), (0, 0)))


@max_pool2d.defjvp
def _max_pool2d_jvp(k: int, s: int, p: int, primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    """The tangent of each output is the input tangent at its window's first maximum (PyTorch's choice among ties).

    Gathered without strided slices of the tangent: its padded copy is viewed as stride phases (rows a::s,
    columns b::s), where window offset (i, j) is a plain shift by (i // s, j // s) of phase (i % s, j % s).
    Transposed, that is a sum of shifted pads, which XLA fuses; the strided form's transpose (interior padding)
    ran up to 2x slower and select-and-scatter, autodiff's default for `reduce_window`, 4-12x slower.
    """
    (x,), (t,) = primals, tangents
    y = max_pool2d(x, k, s, p)
    n, h, w, c = x.shape
    ho, wo = y.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-jnp.inf)
    first = jnp.full(y.shape, k * k, jnp.int32)
    for offset, window in _windows(xp, (k, k), (s, s), (ho, wo)):
        first = jnp.where((first == k * k) & (window == y), offset, first)
    hq, wq = -(-(h + 2 * p) // s), -(-(w + 2 * p) // s)
    phases = jnp.pad(t, ((0, 0), (p, hq * s - h - p), (p, wq * s - w - p), (0, 0))).reshape(n, hq, s, wq, s, c)
    zero = jnp.zeros((), t.dtype)
    out = jnp.zeros(y.shape, t.dtype)
    for i in range(k):
        for j in range(k):
            di, dj = i // s, j // s
            shifted = phases[:, di:di + ho, i % s, dj:dj + wo, j % s, :]
            out = out + jnp.where(first == i * k + j, shifted, zero)
    return y, out
