"""NHWC convolution primitives whose derivatives run on fast kernels, also inside loops.

Three primitives, each bilinear and each the others' transpose, so autodiff to any order never leaves them:
`conv_p` (x, w -> y), `input_grad_p` (dy, w -> dx) and `weight_grad_p` (x, dy -> dw). On CPU in float32 they
lower to oneDNN's forward, backward-data and backward-weights kernels (`jaxdl.onednn`, when built and asked for
with `onednn=True`, which `ConvPolicy` does); otherwise to XLA's convolutions in canonical form.

Why canonical: XLA:CPU only calls its fast convolution kernels on convolutions in canonical form (NHWC input,
HWIO kernel, NHWC output).  Autodiff's transposes of `lax.conv_general_dilated` are not canonical: the input
gradient convolves with a kernel laid out HWOI and the weight gradient contracts over the batch.  At the top
level of a program layout assignment rewrites them with transposes, but inside a `while` loop (`lax.scan`,
`fori_loop`) it does not, and XLA falls back to a naive loop nest (jax-ml/jax#12868).  Measured on the
2-core CPU: input gradients 7-14x and weight gradients 100-400x slower in a loop; a rolled Lanczos over the
course CNN ran 40x slower than unrolled.  Hessian tools run their products inside loops, so the XLA forms
state both transposes in canonical form, with the operand transposes written out.  At the top level their
values are XLA's own, bit for bit; what differs there is speed: the weight gradient transposes the stored
input, where XLA would recompute the input's producers in transposed order (`_materialized`).

Defining a primitive takes JAX's extension APIs (`jax.extend.core.Primitive`, `jax.core.ShapedArray`,
`jax.interpreters.ad.defbilinear`, `batching.primitive_batchers`, `mlir.register_lowering`/`lower_fun`),
which JAX may move or drop between releases; all of them are there in JAX 0.10.2 through 0.12.0.1.  Should a
future JAX lack one, importing this module still works: `PRIMITIVE` is False and `conv` is plain
`lax.conv_general_dilated` in canonical layout, with the same values and derivatives.  Only speed is lost:
oneDNN's kernels, and derivatives inside loops on CPU (the Hessian tools' rolled loops).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxdl import onednn

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
# The convolution and its two transposes, each bilinear, each the others' transpose: closed under autodiff.
conv_p = Primitive("jaxdl_conv") if PRIMITIVE else None  # (x, w) -> y
input_grad_p = Primitive("jaxdl_conv_input_grad") if PRIMITIVE else None  # (dy, w) -> dx, of shape `shape`
weight_grad_p = Primitive("jaxdl_conv_weight_grad") if PRIMITIVE else None  # (x, dy) -> dw, of shape `shape`


def conv(x: Array, w: Array, strides: Sequence[int], padding: Sequence[Sequence[int]],
         lhs_dilation: Sequence[int] = (1, 1), rhs_dilation: Sequence[int] = (1, 1), precision=None,
         onednn: bool = False) -> Array:
    """`lax.conv_general_dilated(x, w, ...)` for NHWC inputs and HWIO kernels (no feature groups).

    onednn: run it and its derivatives on oneDNN's kernels where they apply (float32 on CPU, no input
        dilation, `jaxdl.onednn` built); elsewhere XLA's convolutions run, in canonical form.
    """
    params = dict(strides=tuple(strides), padding=tuple(tuple(p) for p in padding),
                  lhs_dilation=tuple(lhs_dilation), rhs_dilation=tuple(rhs_dilation), precision=precision,
                  onednn=bool(onednn))
    return conv_p.bind(x, w, **params) if PRIMITIVE else _lax_conv(x, w, **params)


def _lax_conv(x: Array, w: Array, *, strides, padding, lhs_dilation, rhs_dilation, precision, onednn=False) -> Array:
    return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation, rhs_dilation, CANONICAL, precision=precision)


def _dilated(size: int, dilation: int) -> int:
    return 0 if size == 0 else (size - 1) * dilation + 1


def _abstract_eval(x, w, *, strides, padding, lhs_dilation, rhs_dilation, precision, onednn) -> ShapedArray:
    spatial = tuple(
        (_dilated(x.shape[1 + a], lhs_dilation[a]) + sum(padding[a]) - _dilated(w.shape[a], rhs_dilation[a]))
        // strides[a] + 1 for a in range(2))
    return ShapedArray((x.shape[0], *spatial, w.shape[3]), x.dtype)


def _shaped(a, b, *, shape, **params) -> ShapedArray:
    return ShapedArray(shape, a.dtype)


def _input_grad_xla(g: Array, w: Array, *, shape, strides, padding, lhs_dilation, rhs_dilation, precision,
                    onednn) -> Array:
    """Input gradient: the output gradient convolved with the flipped kernel, its I and O swapped explicitly."""
    pads = []
    for a in range(2):
        k = _dilated(w.shape[a], rhs_dilation[a])
        before = k - 1 - padding[a][0]
        after = _dilated(shape[1 + a], lhs_dilation[a]) + k - 1 - _dilated(g.shape[1 + a], strides[a]) - before
        pads.append((before, after))
    kernel = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)
    return conv(g, kernel, lhs_dilation, pads, strides, rhs_dilation, precision)


def _weight_grad_xla(x: Array, g: Array, *, shape, strides, padding, lhs_dilation, rhs_dilation, precision,
                     onednn) -> Array:
    """Weight gradient: channels as the batch, the batch as the contraction (C,H,W,N) * (Ho,Wo,N,D) -> (C,kh,kw,D)."""
    pads = []
    for a in range(2):
        after = (_dilated(g.shape[1 + a], strides[a]) - _dilated(x.shape[1 + a], lhs_dilation[a])
                 + _dilated(shape[a], rhs_dilation[a]) - padding[a][0] - 1)
        pads.append((padding[a][0], after))
    out = conv(jnp.transpose(_materialized(x), (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)),
               rhs_dilation, pads, lhs_dilation, strides, precision)
    return jnp.transpose(out, (1, 2, 0, 3))


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


# Transposes. With y = conv(x, w): <conv(x, w), dy> = <x, input_grad(dy, w)> = <w, weight_grad(x, dy)>.
def _conv_t_x(ct, x, w, **params):
    return input_grad_p.bind(ct, w, shape=x.aval.shape, **params)


def _conv_t_w(ct, x, w, **params):
    return weight_grad_p.bind(x, ct, shape=w.aval.shape, **params)


def _input_grad_t_dy(ct, dy, w, *, shape, **params):
    return conv_p.bind(ct, w, **params)


def _input_grad_t_w(ct, dy, w, *, shape, **params):
    return weight_grad_p.bind(ct, dy, shape=w.aval.shape, **params)


def _weight_grad_t_x(ct, x, dy, *, shape, **params):
    return input_grad_p.bind(dy, ct, shape=x.aval.shape, **params)


def _weight_grad_t_dy(ct, x, dy, *, shape, **params):
    return conv_p.bind(x, ct, **params)


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


def _batch_input_grad(args: tuple[Array, Array], dims: tuple, *, shape, **params) -> tuple[Array, int]:
    """A batched output gradient folds into N; a batched kernel maps."""
    (dy, w), (bdy, bw) = args, dims
    if bw is None:
        dy = jnp.moveaxis(dy, bdy, 0)
        dx = input_grad_p.bind(dy.reshape(-1, *dy.shape[2:]), w, shape=(dy.shape[0] * shape[0], *shape[1:]),
                               **params)
        return dx.reshape(*dy.shape[:2], *shape[1:]), 0
    return _batch_map(input_grad_p, args, dims, shape=shape, **params)


def _batch_map(prim, args: tuple[Array, Array], dims: tuple, **params) -> tuple[Array, int]:
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    args = tuple(jnp.moveaxis(a, d, 0) if d is not None else jnp.broadcast_to(a, (size, *a.shape))
                 for a, d in zip(args, dims))
    return lax.map(lambda ab: prim.bind(*ab, **params), args), 0


def _eager(prim, *args, **params) -> Array:
    """Outside jit: the primitive compiled on its own, as JAX runs its own primitives eagerly."""
    return _compiled(prim, **params)(*args)


@functools.cache
def _compiled(prim, **params):
    return jax.jit(functools.partial(prim.bind, **params))


def _uses_onednn(avals, params: dict) -> bool:
    """Whether this convolution lowers to oneDNN: asked for, float32, plain (no input dilation, no negative
    padding, no empty dimension), and the library built."""
    return (params["onednn"] and all(a.dtype == jnp.float32 and 0 not in a.shape for a in avals)
            and params["lhs_dilation"] == (1, 1) and all(p >= 0 for pair in params["padding"] for p in pair)
            and onednn.available())


def _cpu_lowering(name: str, xla_form):
    """Lower on CPU to oneDNN's pass `name` where it applies, else to `xla_form` (XLA's canonical convolutions)."""
    def lower(ctx, a, b, **params):
        if _uses_onednn([*ctx.avals_in, *ctx.avals_out], params):
            shape = ctx.avals_out[0].shape
            form = lambda a, b, **p: onednn.call(name, a, b, shape, p["strides"], p["padding"], p["rhs_dilation"])
        else:
            form = xla_form
        return mlir.lower_fun(form, multiple_results=False)(ctx, a, b, **params)
    return lower


if PRIMITIVE:
    for prim, xla_form, rule, t_a, t_b, name in (
            (conv_p, _lax_conv, _abstract_eval, _conv_t_x, _conv_t_w, "forward"),
            (input_grad_p, _input_grad_xla, _shaped, _input_grad_t_dy, _input_grad_t_w, "backward_data"),
            (weight_grad_p, _weight_grad_xla, _shaped, _weight_grad_t_x, _weight_grad_t_dy, "backward_weights")):
        prim.def_impl(functools.partial(_eager, prim))
        prim.def_abstract_eval(rule)
        mlir.register_lowering(prim, mlir.lower_fun(xla_form, multiple_results=False))
        mlir.register_lowering(prim, _cpu_lowering(name, xla_form), platform="cpu")
        ad.defbilinear(prim, t_a, t_b)
    batching.primitive_batchers[conv_p] = _batch
    batching.primitive_batchers[input_grad_p] = _batch_input_grad
    batching.primitive_batchers[weight_grad_p] = functools.partial(_batch_map, weight_grad_p)
