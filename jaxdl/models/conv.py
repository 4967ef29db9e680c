"""An NHWC convolution primitive whose derivatives XLA:CPU runs at full speed inside loops.

XLA:CPU only calls its fast convolution kernels on convolutions in canonical form (NHWC input, HWIO kernel,
NHWC output).  Autodiff's transposes of `lax.conv_general_dilated` are not canonical: the input gradient
convolves with a kernel laid out HWOI and the weight gradient contracts over the batch.  At the top level
of a program layout assignment rewrites them with transposes, but inside a `while` loop (`lax.scan`,
`fori_loop`) it does not, and XLA falls back to a naive loop nest (jax-ml/jax#12868).  Measured on the
2-core CPU: input gradients 7-14x and weight gradients 100-400x slower in a loop; a rolled Lanczos over the
course CNN ran 40x slower than unrolled.  Hessian tools run their products inside loops, so this primitive
states both transposes in canonical form, with the operand transposes written out.  At the top level the
values are XLA's own, bit for bit; what differs there is speed: the weight gradient transposes the stored
input, where XLA would recompute the input's producers in transposed order (`_materialized`).

Defining a primitive takes JAX's extension APIs (`jax.extend.core.Primitive`, `jax.core.ShapedArray`,
`jax.interpreters.ad.defbilinear`, `batching.primitive_batchers`, `mlir.register_lowering`/`lower_fun`),
which JAX may move or drop between releases; all of them are there in JAX 0.10.2 through 0.12.0.1.  Should a
future JAX lack one, importing this module still works: `PRIMITIVE` is False and `conv` is plain
`lax.conv_general_dilated` in canonical layout, with the same values and derivatives.  Only the speed of
derivatives inside loops on CPU (the Hessian tools' rolled loops) is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Pairs = tuple[tuple[int, int], ...]
CANONICAL = ("NHWC", "HWIO", "NHWC")

try:  # the newest public homes of JAX's extension APIs (jax.extend.core has no ShapedArray, even in 0.12)
    from jax.core import ShapedArray
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    # Everything the registration below calls, looked up now: a missing one means the fallback, not an error.
    _ = (Primitive.def_impl, Primitive.def_abstract_eval, ad.defbilinear, batching.primitive_batchers,
         mlir.register_lowering, mlir.lower_fun)
except (ImportError, AttributeError):
    Primitive = None

# Whether `conv` is the primitive (derivatives canonical, fast in loops) or plain `lax.conv_general_dilated`.
PRIMITIVE: bool = Primitive is not None
conv_p = Primitive("jaxdl_conv") if PRIMITIVE else None


def conv(x: Array, w: Array, strides: Sequence[int], padding: Sequence[Sequence[int]],
         lhs_dilation: Sequence[int] = (1, 1), rhs_dilation: Sequence[int] = (1, 1), precision=None) -> Array:
    """`lax.conv_general_dilated(x, w, ...)` for NHWC inputs and HWIO kernels (no feature groups)."""
    params = dict(strides=tuple(strides), padding=tuple(tuple(p) for p in padding),
                  lhs_dilation=tuple(lhs_dilation), rhs_dilation=tuple(rhs_dilation), precision=precision)
    return conv_p.bind(x, w, **params) if PRIMITIVE else _lax_conv(x, w, **params)


def _lax_conv(x: Array, w: Array, *, strides, padding, lhs_dilation, rhs_dilation, precision) -> Array:
    return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation, rhs_dilation, CANONICAL, precision=precision)


def _dilated(size: int, dilation: int) -> int:
    return 0 if size == 0 else (size - 1) * dilation + 1


def _abstract_eval(x, w, *, strides, padding, lhs_dilation, rhs_dilation, precision) -> ShapedArray:
    spatial = tuple(
        (_dilated(x.shape[1 + a], lhs_dilation[a]) + sum(padding[a]) - _dilated(w.shape[a], rhs_dilation[a]))
        // strides[a] + 1 for a in range(2))
    return ShapedArray((x.shape[0], *spatial, w.shape[3]), x.dtype)


def _transpose_lhs(g: Array, x, w: Array, *, strides, padding, lhs_dilation, rhs_dilation, precision) -> Array:
    """Input gradient: the output gradient convolved with the flipped kernel, its I and O swapped explicitly."""
    pads = []
    for a in range(2):
        k = _dilated(w.shape[a], rhs_dilation[a])
        before = k - 1 - padding[a][0]
        after = _dilated(x.aval.shape[1 + a], lhs_dilation[a]) + k - 1 - _dilated(g.shape[1 + a], strides[a]) - before
        pads.append((before, after))
    kernel = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3).astype(g.dtype)
    return conv(g, kernel, lhs_dilation, pads, strides, rhs_dilation, precision).astype(x.aval.dtype)


def _transpose_rhs(g: Array, x: Array, w, *, strides, padding, lhs_dilation, rhs_dilation, precision) -> Array:
    """Weight gradient: channels as the batch, the batch as the contraction (C,H,W,N) * (Ho,Wo,N,D) -> (C,kh,kw,D)."""
    pads = []
    for a in range(2):
        after = (_dilated(g.shape[1 + a], strides[a]) - _dilated(x.shape[1 + a], lhs_dilation[a])
                 + _dilated(w.aval.shape[a], rhs_dilation[a]) - padding[a][0] - 1)
        pads.append((padding[a][0], after))
    out = conv(jnp.transpose(_materialized(x), (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)).astype(x.dtype),
               rhs_dilation, pads, lhs_dilation, strides, precision)
    return jnp.transpose(out, (1, 2, 0, 3)).astype(w.aval.dtype)


def _materialized(x: Array) -> Array:
    """x, read from memory where XLA would recompute it: an identity that XLA keeps as a fusion boundary.

    The weight gradient transposes its input to (C, H, W, N). XLA:CPU fuses that input's producers (BatchNorm,
    residual, ReLU) into the transposed copy and recomputes them there, reading several arrays in transposed,
    cache-hostile order: on ResNet-18 at 224 px, 3-4x the time of transposing the stored input (BENCHMARKS.md,
    CPU speed across sizes). A conditional's operand is always materialized. Both branches return x (the second
    as x * 1.0, exact for every float, so that XLA does not fold two identical branches away): the value is x
    whatever the predicate, and its derivative is the identity.
    """
    return lax.cond(jnp.isfinite(x.reshape(-1)[0]), lambda v: v, lambda v: v * 1, x)


def _batch(args: tuple[Array, Array], dims: tuple, **params) -> tuple[Array, int]:
    """vmap (e.g. over Hessian probes): a batched input folds into N, a batched kernel into O."""
    (x, w), (bx, bw) = args, dims
    if bw is None:
        x = jnp.moveaxis(x, bx, 0)
        y = conv(x.reshape(-1, *x.shape[2:]), w, **params)
        return y.reshape(*x.shape[:2], *y.shape[1:]), 0
    if bx is None:
        w = jnp.moveaxis(w, bw, 3)
        y = conv(x, w.reshape(*w.shape[:3], -1), **params)
        return y.reshape(*y.shape[:3], *w.shape[3:]), 3
    return lax.map(lambda xw: conv(*xw, **params), (jnp.moveaxis(x, bx, 0), jnp.moveaxis(w, bw, 0))), 0


if PRIMITIVE:
    conv_p.def_impl(_lax_conv)
    conv_p.def_abstract_eval(_abstract_eval)
    mlir.register_lowering(conv_p, mlir.lower_fun(_lax_conv, multiple_results=False))
    ad.defbilinear(conv_p, _transpose_lhs, _transpose_rhs)
    batching.primitive_batchers[conv_p] = _batch
