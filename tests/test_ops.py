"""The fast paths of `jaxdl.models.ops` compute exactly what PyTorch computes, values and gradients."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdl.models import conv as conv_module
from jaxdl.models import ops

# The policy without oneDNN's kernels: XLA's forms, chosen by shape (tests/test_onednn.py covers oneDNN's).
XLA_CPU = ops.ConvPolicy(onednn=False)


@pytest.mark.parametrize("kernel,stride,padding,size", [(3, 2, 1, 16), (3, 2, 1, 7), (2, 2, 0, 8), (2, 2, 0, 7), (3, 2, 0, 15), (3, 1, 1, 5)])
def test_max_pool_matches_pytorch_including_ties(kernel, stride, padding, size):
    rng = np.random.default_rng(size + kernel)
    x = np.maximum(rng.normal(size=(3, size, size, 4)), 0.0)  # ReLU-like: many tied zeros in a window
    x[0, :3, :3, 0] = 1.0  # a window whose maximum is tied at several positions
    out = (size + 2 * padding - kernel) // stride + 1
    g = rng.normal(size=(3, out, out, 4))
    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda v: ops.max_pool2d(v, kernel, stride, padding), jnp.asarray(x))
        (dx,) = vjp(jnp.asarray(g))
    tx = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
    ty = torch.nn.functional.max_pool2d(tx, kernel, stride, padding)
    ty.backward(torch.tensor(g).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(np.asarray(y), ty.detach().permute(0, 2, 3, 1).numpy())
    # every input position gets one gradient from each window it is the first maximum of: a sum of at most
    # a few terms, so float64 differences are at the last bit, and a wrongly routed tie would be O(1)
    np.testing.assert_allclose(np.asarray(dx), tx.grad.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-12)


CONV_FORMS = {
    "gemm": lambda x, w, stride, pads: ops.gemm_conv(x, w, (stride, stride), pads),
    "space_to_depth_2": lambda x, w, stride, pads: ops.space_to_depth_conv(x, w, pads, 2),
    "space_to_depth_4": lambda x, w, stride, pads: ops.space_to_depth_conv(x, w, pads, 4),
}


CONV_CASES = [  # kernel, stride, padding, input size
    ((3, 3), 1, 1, (2, 2)), ((3, 3), 2, 1, (4, 4)), ((3, 3), 1, 1, (1, 1)), ((1, 1), 2, 0, (4, 4)), ((7, 7), 2, 3, (3, 3)),
    ((5, 5), 1, 0, (14, 14)), ((5, 5), 2, 2, (9, 9)), ((5, 3), 1, 2, (11, 6)), ((2, 4), 1, 0, (7, 9)),
]


@pytest.mark.parametrize("form,kernel,stride,padding,size", [
    (form, *case) for form in CONV_FORMS for case in CONV_CASES
    if case[1] == 1 or not form.startswith("space_to_depth")  # the space-to-depth form is for stride 1
])
def test_conv_forms_match_xla_conv(form, kernel, stride, padding, size):
    rng = np.random.default_rng(sum(kernel) * 10 + sum(size))
    x = jnp.asarray(rng.normal(size=(2, *size, 5)))
    w = jnp.asarray(rng.normal(size=(*kernel, 5, 6)))
    pads = ((padding, padding), (padding, padding))
    with jax.enable_x64(True):
        def ref(x, w):
            return jax.lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))

        def fast(x, w):
            return CONV_FORMS[form](x, w, stride, pads)

        x, w = x.astype(jnp.float64), w.astype(jnp.float64)
        np.testing.assert_allclose(fast(x, w), ref(x, w), rtol=1e-12, atol=1e-12)
        g_ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(ref(x, w))), argnums=(0, 1))(x, w)
        g_new = jax.grad(lambda x, w: jnp.sum(jnp.sin(fast(x, w))), argnums=(0, 1))(x, w)
    for a, b in zip(g_new, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("policy,x_shape,w_shape,form", [
    (XLA_CPU, (1, 2, 2, 4), (3, 3, 4, 32), "gemm"),  # ResNet's layer4 at 32 px: a 2x2 map
    (XLA_CPU, (1, 14, 14, 6), (5, 5, 6, 16), "space_to_depth"),  # LeNet-5's conv2
    (XLA_CPU, (1, 8, 8, 4), (3, 3, 4, 32), "canonical"),
    (ops.ConvPolicy(space_to_depth_block=0, onednn=False), (1, 14, 14, 6), (5, 5, 6, 16), "canonical"),
    (ops.ConvPolicy(gemm_max_output=0, onednn=False), (1, 2, 2, 4), (3, 3, 4, 32), "canonical"),
    (ops.XLA, (1, 2, 2, 4), (3, 3, 4, 32), "xla"),
    (ops.XLA, (1, 14, 14, 6), (5, 5, 6, 16), "xla"),
])
def test_conv_policy_dispatches_each_shape_to_its_form(monkeypatch, policy, x_shape, w_shape, form):
    """The policy's choice, and that calling it runs that form (each form's numbers are checked above)."""
    assert policy.form(x_shape, w_shape, (1, 1), ((1, 1), (1, 1))) == form
    ran = []
    for name, fn in (("gemm", "gemm_conv"), ("space_to_depth", "space_to_depth_conv"), ("canonical", "conv")):
        original = getattr(ops, fn)
        monkeypatch.setattr(ops, fn, lambda *a, _name=name, _f=original, **k: ran.append(_name) or _f(*a, **k))
    out = policy(jnp.ones(x_shape), jnp.ones(w_shape), (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert ran[:1] == ([] if form == "xla" else [form])  # space-to-depth runs its folded conv canonically
    want = jax.lax.conv_general_dilated(jnp.ones(x_shape), jnp.ones(w_shape), (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(out, want, rtol=1e-5)


def test_auto_policy_takes_xlas_convolutions_off_cpu(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert ops.DEFAULT.form((1, 2, 2, 4), (3, 3, 4, 32), (1, 1), ((1, 1), (1, 1))) == "xla"
    assert ops.ConvPolicy("cpu", onednn=False).form((1, 2, 2, 4), (3, 3, 4, 32), (1, 1), ((1, 1), (1, 1))) == "gemm"


def test_max_pool_hessian_vector_product_matches_pytorch():
    """Forward-over-reverse works through the pooling (jaxdl.hessian needs it) and agrees with torch's HVP."""
    rng = np.random.default_rng(3)
    x, v = rng.normal(size=(2, 7, 7, 3)), rng.normal(size=(2, 7, 7, 3))

    def jax_loss(x):
        return jnp.sum(jnp.tanh(ops.max_pool2d(x, 3, 2, 1)) ** 3)

    with jax.enable_x64(True):
        _, hv = jax.jvp(jax.grad(jax_loss), (jnp.asarray(x),), (jnp.asarray(v),))

    def torch_loss(x):
        return torch.sum(torch.tanh(torch.nn.functional.max_pool2d(x.permute(0, 3, 1, 2), 3, 2, 1)) ** 3)

    _, want = torch.autograd.functional.hvp(torch_loss, torch.tensor(x), torch.tensor(v))
    np.testing.assert_allclose(np.asarray(hv), want.numpy(), rtol=1e-10, atol=1e-12)


CONV_CASES = [(8, 3, 1, (1, 1)), (9, 3, 2, (1, 1)), (7, 1, 2, (0, 0)), (11, 7, 2, (3, 3)), (8, 3, 2, (0, 2))]


@pytest.mark.parametrize("size,kernel,stride,pad", CONV_CASES)
def test_canonical_conv_derivatives_equal_lax(size, kernel, stride, pad):
    """Values, gradients, HVPs (plain, linearised and vmapped over probes) and reverse-over-reverse of the
    canonical-transpose primitive equal autodiff of `lax.conv_general_dilated` in float64."""
    from jaxdl.models.conv import conv

    rng = np.random.default_rng(size * 10 + kernel)
    dn = ("NHWC", "HWIO", "NHWC")
    with jax.enable_x64(True):
        x, w = jnp.asarray(rng.normal(size=(2, size, size + 1, 3))), jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)))
        v = (jnp.asarray(rng.normal(size=x.shape)), jnp.asarray(rng.normal(size=w.shape)))
        probes = jax.tree.map(lambda a: jnp.stack([a, -2 * a, a ** 2]), v)

        def results(c):
            loss = lambda x, w: jnp.sum(jnp.tanh(c(x, w, (stride, stride), (pad, pad))) ** 2)
            grad = jax.grad(loss, (0, 1))
            lin = jax.linearize(grad, x, w)[1]
            return (loss(x, w), grad(x, w), jax.jvp(grad, (x, w), v)[1], jax.vmap(lin)(*probes),
                    jax.grad(lambda x, w: jnp.sum(jax.grad(loss, 1)(x, w) ** 2), (0, 1))(x, w),
                    jax.vmap(lambda a, b: c(a, b, (stride, stride), (pad, pad)))(*probes))

        want = results(lambda x, w, s, p: jax.lax.conv_general_dilated(x, w, s, p, dimension_numbers=dn))
        got = results(lambda x, w, s, p: conv(x, w, s, p))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not conv_module.PRIMITIVE, reason="this JAX lacks the extension APIs: conv is plain lax (tests/test_jax_compat.py)")
def test_conv_derivatives_inside_loops_are_canonical_convolutions():
    """XLA:CPU runs non-canonical convolutions inside `while` loops as naive loop nests (100x slower); every
    convolution in a looped Hessian-vector product through XLA's CPU forms must be NHWC/HWIO."""
    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.normal(size=(4, 9, 9, 3)), jnp.float32), jnp.asarray(rng.normal(size=(3, 3, 3, 32)), jnp.float32)

    def loss(w):
        y = XLA_CPU(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.tanh(y) ** 2)

    def looped(w, vs):
        return jax.lax.scan(lambda c, v: (c, jax.jvp(jax.grad(loss), (w,), (v,))[1]), None, vs)[1]

    hlo = jax.jit(looped).lower(w, jnp.stack([w, w])).compile().as_text()
    labels = [line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines() if " convolution(" in line]
    assert len(labels) >= 3 and set(labels) == {"b01f_01io->b01f"}, labels


@pytest.mark.parametrize("size,kernel,stride,pad", CONV_CASES[:3])
def test_canonical_conv_gives_xlas_own_bits_at_top_level(size, kernel, stride, pad):
    """Outside loops XLA canonicalises autodiff's convolutions itself: the primitive must change no value there,
    so training numerics are XLA's: float32 values and gradients bit for bit."""
    from jaxdl.models.conv import conv

    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)

    def results(c):
        loss = lambda x, w: jnp.sum(jnp.tanh(c(x, w, (stride, stride), (pad, pad))) ** 2)
        return jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w)

    want = results(lambda x, w, s, p: jax.lax.conv_general_dilated(x, w, s, p, dimension_numbers=("NHWC", "HWIO", "NHWC")))
    for a, b in zip(jax.tree.leaves(results(conv)), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not conv_module.PRIMITIVE, reason="this JAX lacks the extension APIs: conv is plain lax (tests/test_jax_compat.py)")
def test_weight_gradient_transposes_the_stored_input_not_its_producers():
    """The weight gradient's (C, H, W, N) copy of the input must read the input as stored: XLA:CPU would
    otherwise fuse the ReLU (and BatchNorm, residual) that made it into the copy and recompute them in
    transposed order, 3-4x slower (BENCHMARKS.md, CPU speed across sizes)."""
    rng = np.random.default_rng(0)
    z, r = (jnp.asarray(rng.normal(size=(4, 9, 9, 8)), jnp.float32) for _ in range(2))
    w = jnp.asarray(rng.normal(size=(3, 3, 8, 32)), jnp.float32)  # 32 outputs: the canonical form

    def loss(w, z, r):
        return jnp.sum(XLA_CPU(jax.nn.relu(z * 1.5 + r), w, (1, 1), ((1, 1), (1, 1))) ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(w, z, r).compile().as_text()
    computations = hlo.split("\n\n")
    transposed = [c for c in computations if "f32[8,9,9,4]" in c.split("ROOT", 1)[-1].split("\n")[0]]
    assert transposed and not any("maximum(" in c for c in transposed), transposed


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_convolutions_are_one_gemm_at_any_map_size(stride):
    """ResNet-50's 1x1 bottleneck and downsample convolutions: a GEMM over the (strided) input itself."""
    x, w, pads = (1, 56, 56, 64), (1, 1, 64, 256), ((0, 0), (0, 0))
    assert XLA_CPU.form(x, w, (stride, stride), pads) == "gemm"
    assert ops.ConvPolicy(gemm_pointwise=False, onednn=False).form(x, w, (stride, stride), pads) == "canonical"
    assert XLA_CPU.form(x, w, (stride, stride), ((1, 1), (1, 1))) == "canonical"  # padded: not pointwise
