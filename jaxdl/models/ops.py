"""Convolution and max pooling with PyTorch's numbers, in the form each backend runs fastest.

Two XLA CPU weak spots cost more than the rest of a ResNet-18 step together (measured with
`python -m experiments.bench` and profiles, see BENCHMARKS.md):

- 3x3 convolutions over 2x2 and 1x1 feature maps (layer3/layer4 at 32x32 input) run 30-45x slower than
  PyTorch. Written as patches + one GEMM (im2col) they run at GEMM speed; autodiff gives the backward as GEMMs
  too. Larger maps keep XLA's convolution, which wins there.
- The gradient of `lax.reduce_window` max lowers to select-and-scatter, 4-12x slower than the formulation
  below, which also reproduces PyTorch's choice among tied maxima (the first in the window).

And one LeNet-5 weak spot: convolutions with few output channels (3 -> 6) run at ~3.5 GFLOP/s; as one GEMM
against a banded matrix (`banded_conv`) they run near GEMM speed despite the band's wasted multiply-adds.

GPUs and TPUs keep `lax.conv_general_dilated` (cuDNN and friends) and only the pooling backward changes.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl.models.conv import conv

Array = jax.Array

# Output maps at most this large (height and width) take the GEMM form on CPU; measured in BENCHMARKS.md.
GEMM_MAX_OUTPUT = 2
# Convolutions with at most this many output channels, on maps at most BANDED_MAX_WASTE kernel widths wide,
# take the banded-GEMM form on CPU (measured on LeNet-5, BENCHMARKS.md).
BANDED_MAX_OUT_CHANNELS = 16
BANDED_MAX_WASTE = 8
_fast_paths = True


def conv_general_dilated(
    lhs: Array,
    rhs: Array,
    window_strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **kwargs,
) -> Array:
    """`lax.conv_general_dilated` for NHWC/HWIO.  On CPU plain convolutions take the GEMM form on small maps, the
    banded-GEMM form with few output channels, and otherwise jaxdl's canonical-derivative primitive (`conv.conv`:
    XLA's own program at the top level, fast inside loops)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # Flax always passes out_sharding
    plain = feature_group_count == 1 and not kwargs and all(
        d is None or all(v == 1 for v in d) for d in (lhs_dilation, rhs_dilation)
    )
    if plain and lhs.ndim == 4 and jax.default_backend() == "cpu" and _fast_paths:
        strides, pads = tuple(window_strides), tuple(map(tuple, padding))
        out = [(lhs.shape[1 + a] + sum(pads[a]) - rhs.shape[a]) // strides[a] + 1 for a in range(2)]
        if max(out) <= GEMM_MAX_OUTPUT:
            return gemm_conv(lhs, rhs, strides, pads, precision)
        if rhs.shape[3] <= BANDED_MAX_OUT_CHANNELS and lhs.shape[2] + sum(pads[1]) <= BANDED_MAX_WASTE * rhs.shape[1]:
            return banded_conv(lhs, rhs, strides, pads, precision)
        return conv(lhs, rhs, strides, pads, precision=precision)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)


@contextlib.contextmanager
def reference_convolutions() -> Iterator[None]:
    """Trace convolutions as plain `lax.conv_general_dilated` inside this block: to count a model's own FLOPs
    (the banded form's redundant multiply-adds are an implementation cost, not the model's arithmetic)."""
    global _fast_paths
    _fast_paths, saved = False, _fast_paths
    try:
        yield
    finally:
        _fast_paths = saved


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


def banded_conv(x: Array, kernel: Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
                precision=None) -> Array:
    """Convolution as one GEMM against a banded (Toeplitz) matrix per kernel row: output channels count x width.

    Output row r is sum_i x[r*s + i] @ T_i with x's row flattened to (W*C) and T_i (W*C, Wo*D) holding kernel
    row i on a band.  The band wastes W/kw of the multiply-adds, but the GEMM's output dimension is Wo*D instead
    of D: for LeNet-5's first layer (3 -> 6 channels) that turns XLA:CPU's 3.5 GFLOP/s convolution into a GEMM.
    """
    kh, kw, cin, cout = kernel.shape
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    n, h, w, _ = x.shape
    (sh, sw), ho, wo = strides, (h - kh) // strides[0] + 1, (w - kw) // strides[1] + 1
    band = np.arange(w)[None, :, None] == sw * np.arange(wo)[None, None, :] + np.arange(kw)[:, None, None]
    t = jnp.einsum("ijcd,jpq->ipcqd", kernel, band.astype(kernel.dtype), precision=precision)
    rows = [lax.slice_in_dim(x, i, i + sh * (ho - 1) + 1, sh, axis=1).reshape(n * ho, w * cin) for i in range(kh)]
    y = jnp.dot(jnp.concatenate(rows, axis=-1), t.reshape(kh * w * cin, wo * cout), precision=precision)
    return y.reshape(n, ho, wo, cout)


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
