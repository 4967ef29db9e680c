"""jaxdl across JAX releases: what it takes from JAX's extension or private APIs degrades, never breaks.

`jaxdl.models.conv` defines a primitive through JAX's extension APIs; where a JAX lacks one, `conv` falls back to
plain `lax.conv_general_dilated` (tested here by hiding those APIs in a subprocess). `jaxdl.runtime` asks a private
JAX function whether XLA has read its flags; without it, `use_fast_cpu_flags` still works.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import runtime
from jaxdl.models import conv as conv_module

ROOT = Path(__file__).resolve().parent.parent

# Hide one of the APIs the primitive needs, after JAX and Flax are imported (Flax needs jax.extend.core itself).
HIDE = {
    "module": "sys.modules['jax.extend.core'] = None",  # ImportError
    "attribute": "del jax.interpreters.batching.primitive_batchers",  # AttributeError
}

FALLBACK_CHECKS = """
import numpy as np
from flax import nnx
from jax import lax
from jaxdl import models
from jaxdl.models.ops import XLA

dn = ("NHWC", "HWIO", "NHWC")
rng = np.random.default_rng(0)
with jax.enable_x64(True):
    x, w = jnp.asarray(rng.normal(size=(3, 2, 9, 8, 3))), jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
    for s, p in (((1, 1), ((1, 1), (1, 1))), ((2, 2), ((0, 2), (1, 0)))):
        def results(c):
            f = lambda x, w: jnp.sum(jnp.tanh(c(x, w, s, p)) ** 2)
            return f(x[0], w), jax.grad(f, (0, 1))(x[0], w), jax.vmap(jax.grad(f, (0, 1)), (0, None))(x, w)

        assert "jaxdl_conv" not in str(jax.make_jaxpr(lambda x, w: results(conv))(x, w))
        got = jax.jit(lambda x, w: results(conv))(x, w)
        want = jax.jit(lambda x, w: results(lambda *a: lax.conv_general_dilated(*a, dimension_numbers=dn)))(x, w)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.dtype == jnp.float64 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)

# A zoo model through the default policy (its CPU forms call `conv`) against XLA's own convolutions, with the
# same float64 weights (drawn here: compiling the models' own initialisers would take most of this test's time).
graphdefs = [nnx.split(nnx.eval_shape(lambda: models.create("lenet5", 10, rngs=nnx.Rngs(0), **kw)))
             for kw in ({}, {"conv": XLA})]
with jax.enable_x64(True):
    weights = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape) / 4), graphdefs[0][1])
    images = jnp.asarray(rng.normal(size=(2, 32, 32, 3)))
    loss = nnx.jit(nnx.value_and_grad(lambda model: jnp.sum(jnp.tanh(model(images)) ** 2)))
    (value, grads), (want_value, want_grads) = (loss(nnx.merge(g, weights)) for g, _ in graphdefs)
assert value.dtype == jnp.float64
np.testing.assert_allclose(value, want_value, rtol=1e-12)
for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
    assert a.dtype == jnp.float64
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
print("ok")
"""


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("hidden", sorted(HIDE))
def test_without_jax_extension_apis_conv_is_lax_conv(hidden):
    """A JAX without one of the extension APIs: importing works, PRIMITIVE is False, and `conv` is
    `lax.conv_general_dilated` (float64 values and gradients, also under vmap); a zoo model trains as before."""
    checks = FALLBACK_CHECKS if hidden == "module" else 'print("ok")'
    out = python(f"""
import sys, jax, jax.numpy as jnp, jax.interpreters.batching, flax.nnx
{HIDE[hidden]}
from jaxdl.models.conv import PRIMITIVE, conv, conv_p
assert PRIMITIVE is False and conv_p is None, (PRIMITIVE, conv_p)
{checks}
""")
    assert out.strip() == "ok", out


def test_this_jax_has_the_fast_primitive_and_registering_it_does_not_warn():
    """JAX 0.10.2 through 0.12.0.1 have every API the primitive needs (so tests/test_ops.py tests the fast path)."""
    if jax.__version_info__ >= (0, 13):
        pytest.skip(f"JAX {jax.__version__} is newer than the releases checked for the primitive's APIs")
    assert conv_module.PRIMITIVE is True
    x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    assert "jaxdl_conv" in str(jax.make_jaxpr(lambda x, w: conv_module.conv(x, w, (1, 1), ((1, 1), (1, 1))))(x, w))
    assert python("import jaxdl.models.conv as c; print(c.PRIMITIVE)").strip() == "True"


def test_fast_cpu_flags_without_jaxs_private_backend_query(monkeypatch):
    """`backends_are_initialized` is private: while this JAX has it, it is what decides; without it,
    `use_fast_cpu_flags` assumes JAX has not started rather than failing."""
    from jax._src import xla_bridge

    assert callable(xla_bridge.backends_are_initialized)
    monkeypatch.delattr(xla_bridge, "backends_are_initialized")
    assert runtime._backends_initialized() is False
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    monkeypatch.delenv("JAXDL_CPU_FLAGS", raising=False)
    assert runtime.use_fast_cpu_flags() is True
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/nowhere {runtime.YNN_FLAG}"


def test_fast_cpu_flags_leave_a_users_own_ynn_choice_alone(monkeypatch):
    monkeypatch.setattr(runtime, "_backends_initialized", lambda: False)
    monkeypatch.delenv("JAXDL_CPU_FLAGS", raising=False)
    mine = "--xla_cpu_experimental_ynn_fusion_type=all"
    monkeypatch.setenv("XLA_FLAGS", mine)
    assert runtime.use_fast_cpu_flags() is False
    assert os.environ["XLA_FLAGS"] == mine
