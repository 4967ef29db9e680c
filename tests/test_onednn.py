"""oneDNN's convolution kernels (`jaxdl.onednn`): what XLA's convolutions compute, with every derivative the
library takes (gradients, Hessian-vector products forward-over-reverse, reverse-over-reverse, vmap over probes,
rolled loops), and a clear line where the library cannot be built."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import onednn
from jaxdl.models import conv as conv_module
from jaxdl.models import ops

needs_library = pytest.mark.skipif(not (conv_module.PRIMITIVE and onednn.available()),
                                   reason="oneDNN library not built (make onednn)")
DN = ("NHWC", "HWIO", "NHWC")


def test_library_is_built_wherever_onednn_is_installed():
    """`make` builds it where the system has oneDNN; a silent fallback would hide a 1.1-15x slowdown per layer."""
    if onednn._find_header() is None:
        pytest.skip("this machine has no oneDNN headers (apt-get install libdnnl-dev)")
    assert onednn.available(), f"oneDNN is installed but {onednn.LIBRARY} is not built or does not load: make onednn"


def custom_calls(hlo: str) -> set[str]:
    return {part.split('"')[1] for part in hlo.split("custom_call_target=")[1:]}


# (input NHWC, kernel HWIO, strides, padding, kernel dilation): the zoo's geometries and odd ones
GEOMETRIES = [
    ((2, 9, 9, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((2, 10, 11, 4), (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # stride 2, odd width
    ((3, 11, 11, 2), (7, 7, 2, 4), (2, 2), ((3, 3), (3, 3)), (1, 1)),  # a stem
    ((2, 8, 8, 6), (1, 1, 6, 4), (2, 2), ((0, 0), (0, 0)), (1, 1)),  # a downsample
    ((2, 7, 7, 3), (3, 3, 3, 4), (3, 3), ((0, 0), (0, 0)), (1, 1)),  # the last row unused
    ((2, 2, 2, 5), (3, 3, 5, 7), (1, 1), ((1, 1), (1, 1)), (1, 1)),  # ResNet's layer3 at 32 px
    ((2, 9, 8, 3), (5, 3, 3, 4), (1, 2), ((2, 1), (0, 2)), (1, 1)),  # asymmetric everything
    ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), ((2, 2), (2, 2)), (2, 2)),  # dilated kernel
]


@needs_library
@pytest.mark.parametrize("x_shape,w_shape,strides,padding,dilation", GEOMETRIES)
def test_onednn_conv_and_its_derivatives_match_xla(x_shape, w_shape, strides, padding, dilation):
    """float32, all passes on oneDNN (checked in the compiled program), against autodiff of
    `lax.conv_general_dilated`: values, gradients, forward-over-reverse HVPs (plain and vmapped over probes),
    reverse-over-reverse. Tolerance: float32 summation order, 2e-5 of each result's largest entry."""
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x, w = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in (x_shape, w_shape))
    v = (jnp.asarray(rng.normal(size=x_shape), jnp.float32), jnp.asarray(rng.normal(size=w_shape), jnp.float32))
    probes = jax.tree.map(lambda a: jnp.stack([a, -2 * a]), v)

    def results(c):
        loss = lambda x, w: jnp.sum(jnp.tanh(c(x, w)) ** 2)
        grad = jax.grad(loss, (0, 1))
        return (c(x, w), grad(x, w), jax.jvp(grad, (x, w), v)[1],
                jax.vmap(lambda a, b: jax.jvp(grad, (x, w), (a, b))[1])(*probes),
                jax.grad(lambda x, w: jnp.sum(jax.grad(loss, 1)(x, w) ** 2), (0, 1))(x, w))

    fast = lambda x, w: conv_module.conv(x, w, strides, padding, rhs_dilation=dilation, onednn=True)
    program = jax.jit(lambda x, w: results(fast)).lower(x, w).compile().as_text()
    assert custom_calls(program) >= {f"jaxdl_onednn_conv_{p}" for p in onednn.TARGETS}
    assert " convolution(" not in program
    got = jax.jit(lambda x, w: results(fast))(x, w)
    want = results(lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                                             dimension_numbers=DN))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(jnp.abs(b).max()))


@needs_library
def test_float64_and_eager_calls_take_xla_exactly():
    """oneDNN's kernels are float32: float64 convolutions (the exactness tests') stay XLA's, bit for bit, and
    a call outside jit runs the same compiled primitive."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x, w = jnp.asarray(rng.normal(size=(2, 6, 6, 3))), jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
        got = jax.grad(lambda x, w: jnp.sum(jnp.sin(ops.DEFAULT(x, w, (1, 1), ((1, 1), (1, 1))))), (0, 1))(x, w)
        want = jax.grad(lambda x, w: jnp.sum(jnp.sin(jax.lax.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN))), (0, 1))(x, w)
        assert ops.DEFAULT.form(x.shape, w.shape, (1, 1), ((1, 1), (1, 1)), x.dtype) != "onednn"
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    eager = conv_module.conv(x32, w32, (1, 1), ((1, 1), (1, 1)), onednn=True)
    np.testing.assert_array_equal(eager, jax.jit(lambda x, w: conv_module.conv(
        x, w, (1, 1), ((1, 1), (1, 1)), onednn=True))(x32, w32))


@needs_library
def test_default_policy_takes_onednn_for_every_float32_cpu_convolution():
    for x, w, s, p in [((1, 2, 2, 4), (3, 3, 4, 32), (1, 1), ((1, 1), (1, 1))),  # was gemm (2x2 map)
                       ((1, 56, 56, 64), (1, 1, 64, 256), (2, 2), ((0, 0), (0, 0))),  # was gemm (pointwise)
                       ((1, 14, 14, 6), (5, 5, 6, 16), (1, 1), ((0, 0), (0, 0))),  # was space-to-depth
                       ((1, 56, 56, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)))]:
        assert ops.DEFAULT.form(x, w, s, p) == "onednn"
        assert ops.ConvPolicy(onednn=False).form(x, w, s, p) != "onednn"


@needs_library
def test_rolled_hessian_loops_run_onednn():
    """The Hessian tools' rolled loops (`lax.scan` of HVPs) call oneDNN's kernels inside the loop body."""
    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.normal(size=(4, 9, 9, 3)), jnp.float32), jnp.asarray(rng.normal(size=(3, 3, 3, 32)), jnp.float32)

    def loss(w):
        return jnp.sum(jnp.tanh(ops.DEFAULT(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)) ** 2)

    def looped(w, vs):
        return jax.lax.scan(lambda c, v: (c, jax.jvp(jax.grad(loss), (w,), (v,))[1]), None, vs)[1]

    vs = jnp.stack([w, -w])
    hlo = jax.jit(looped).lower(w, vs).compile().as_text()
    assert "while" in hlo and " convolution(" not in hlo and custom_calls(hlo) >= {"jaxdl_onednn_conv_forward"}
    want = jnp.stack([jax.jvp(jax.grad(loss), (w,), (v,))[1] for v in vs])
    np.testing.assert_allclose(jax.jit(looped)(w, vs), want, rtol=0, atol=1e-5 * float(jnp.abs(want).max()))


def test_build_without_compiler_or_onednn_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(onednn, "_find_header", lambda: None)
    with pytest.raises(onednn.BuildError, match="libdnnl-dev"):
        onednn.build(tmp_path / "lib.so")
    assert not (tmp_path / "lib.so").exists()


def test_cli_reports_a_failed_build_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CXX": str(tmp_path / "no-compiler"), "DNNL_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "jaxdl.onednn", "build"], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "libdnnl-dev" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_missing_library_means_xla_convolutions(monkeypatch, tmp_path):
    monkeypatch.setattr(onednn, "LIBRARY", tmp_path / "absent.so")
    onednn.available.cache_clear()
    try:
        assert not onednn.available()
        assert ops.DEFAULT.form((1, 8, 8, 4), (3, 3, 4, 32), (1, 1), ((1, 1), (1, 1))) == "canonical"
    finally:
        monkeypatch.undo()
        onednn.available.cache_clear()
