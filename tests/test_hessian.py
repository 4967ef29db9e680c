"""jaxdl.hessian against dense float64 linear algebra on problems small enough to diagonalise exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdl import hessian as hs


def _mlp_problem(seed: int = 0, n: int = 40, d: int = 5, h: int = 6, k: int = 3):
    """A small tanh MLP with softmax CE: indefinite Hessian, ~60 parameters, non-trivial spectrum."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    params = {"w1": rng.normal(size=(d, h)).astype(np.float32), "w2": rng.normal(size=(h, k)).astype(np.float32)}

    def per_example(p, xb, yb):
        logits = jnp.tanh(xb @ p["w1"]) @ p["w2"]
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1)[:, 0]

    loss = lambda p: per_example(p, x, y).mean()
    return loss, params, per_example, x, y


def test_hvp_equals_dense_hessian_times_v():
    loss, params, *_ = _mlp_problem()
    loss_flat, theta, unravel = hs.flatten_loss(loss, params)
    h = hs.hessian_matrix(loss_flat, theta)
    v = np.random.default_rng(1).normal(size=theta.size)
    with jax.enable_x64(True):
        theta64 = jnp.asarray(np.asarray(theta, np.float64))
        hv_tree = hs.hvp(loss, unravel(theta64), unravel(jnp.asarray(v)))
        hv_flat = np.asarray(jax.flatten_util.ravel_pytree(hv_tree)[0])
        for cache in (True, False):
            op = hs.operator(loss_flat, theta64, cache=cache)
            np.testing.assert_allclose(np.asarray(op.matvec(jnp.asarray(v))), h @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv_flat, h @ v, rtol=1e-10, atol=1e-12)
    assert np.allclose(h, h.T, atol=1e-12)


def test_lanczos_matches_exact_spectrum_both_ends():
    loss, params, *_ = _mlp_problem()
    loss_flat, theta, _ = hs.flatten_loss(loss, params)
    exact = np.linalg.eigvalsh(hs.hessian_matrix(loss_flat, theta))
    assert exact[0] < -1e-3 < 1e-3 < exact[-1]  # indefinite, so both ends are a real test
    with jax.enable_x64(True):
        op = hs.operator(loss_flat, jnp.asarray(np.asarray(theta, np.float64)))
        full = hs.ritz(*hs.lanczos(op, theta.size, jax.random.key(0)))[0]  # m = n: whole spectrum
        lo, hi = hs.extreme_eigenvalues(op, 30, jax.random.key(1))  # m = n/2: extremes only
    np.testing.assert_allclose(full, exact, atol=1e-9)
    scale = np.abs(exact).max()
    assert abs(lo - exact[0]) < 1e-6 * scale and abs(hi - exact[-1]) < 1e-6 * scale


def test_lanczos_survives_low_rank_breakdown():
    """Rank-2 Hessian (n=10): the Krylov space is invariant after 3 steps; restart must keep T exact."""
    a = np.random.default_rng(0).normal(size=(2, 10))
    loss_flat = lambda t: 0.5 * jnp.sum((jnp.asarray(a) @ t) ** 2)
    with jax.enable_x64(True):
        op = hs.operator(loss_flat, jnp.zeros(10, jnp.float64))
        theta = hs.ritz(*hs.lanczos(op, 10, jax.random.key(0)))[0]
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(a.T @ a), atol=1e-10)


def test_hutchinson_trace_within_stated_error():
    loss, params, *_ = _mlp_problem()
    loss_flat, theta, _ = hs.flatten_loss(loss, params)
    exact = np.trace(hs.hessian_matrix(loss_flat, theta))
    mean, stderr, samples = hs.hutchinson_trace(hs.operator(loss_flat, theta), 400, jax.random.key(0), chunk=100)
    assert samples.shape == (400,)
    assert abs(float(mean) - exact) < 4 * float(stderr)  # 4-sigma: fails with probability ~6e-5
    assert float(stderr) < 0.2 * abs(exact)


def test_slq_density_recovers_eigenvalue_mass():
    loss, params, *_ = _mlp_problem()
    loss_flat, theta, _ = hs.flatten_loss(loss, params)
    exact = np.linalg.eigvalsh(hs.hessian_matrix(loss_flat, theta))
    nodes, weights = hs.slq(hs.operator(loss_flat, theta), theta.size, 2, jax.random.key(0))
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(nodes[0], exact, atol=1e-4 * np.abs(exact).max())
    grid = np.linspace(exact[0] - 1, exact[-1] + 1, 2001)
    dens = hs.spectral_density(nodes, weights, grid, sigma=0.05)
    assert abs(np.trapezoid(dens, grid) - 1) < 1e-3


def test_power_iteration_finds_dominant_eigenvalue():
    loss_flat = lambda t: 0.5 * jnp.sum(jnp.asarray([5.0, -1.0, 2.0, 0.5]) * t**2)
    lam, _ = hs.power_iteration(hs.operator(loss_flat, jnp.ones(4)), 200, jax.random.key(0))
    assert abs(float(lam) - 5.0) < 1e-4


def test_batched_dataset_loss_and_hvp_equal_full_batch():
    loss, params, per_example, x, y = _mlp_problem(n=37)
    loss_flat, theta, unravel = hs.flatten_loss(loss, params)
    batch_loss = lambda t, b: jnp.sum(b[2] * per_example(unravel(t), b[0], b[1]))
    batches = hs.stack_batches(x, y, batch_size=8)  # 5 batches, 3 padded rows
    assert batches[0].shape == (5, 8, 5) and batches[2][-1, -3:].sum() == 0
    v = jnp.asarray(np.random.default_rng(0).normal(size=theta.size), jnp.float32)
    full = hs.operator(loss_flat, theta).matvec(v)
    batched = hs.dataset_operator(batch_loss, theta, batches).matvec(v)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(full), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(float(hs.dataset_loss(batch_loss, theta, batches)), float(loss_flat(theta)), rtol=1e-6)


def test_model_batch_loss_uses_eval_mode_and_leaves_model_alone():
    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.lin = nnx.Linear(4, 3, rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)

        def __call__(self, x):
            return self.bn(self.lin(x))

    model = Net(nnx.Rngs(0))
    model.bn.mean[...] = jnp.asarray([1.0, -2.0, 0.5])  # running stats differ from batch stats
    model.train()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 0, 1, 2])
    ce = lambda logits, lab: -jnp.take_along_axis(jax.nn.log_softmax(logits), lab[:, None], 1)[:, 0]
    batch_loss, theta, _ = hs.model_batch_loss(model, ce)
    assert theta.size == 4 * 3 + 3 + 3 + 3  # Linear + BatchNorm scale/bias; running stats excluded
    w = jnp.full(6, 1 / 6)
    model.eval()
    expected = float(ce(model(x), y).mean())
    model.train()
    assert float(batch_loss(theta, (x, y, w))) == pytest.approx(expected, rel=1e-6)
    assert not model.bn.use_running_average  # caller's model still in train mode


def test_model_spectrum_estimates_agree_with_exact_eigenvalues():
    """A 68-parameter tanh MLP (nnx): Lanczos extremes, Hutchinson trace, SLQ and the exact part all checked
    against a dense Hessian built here independently of model_spectrum's own loss construction."""
    from jaxdl import models

    model = models.MLP(3, in_channels=1, image_size=3, hidden=(5,), activation_fn="tanh", rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 3, 1)).astype(np.float32)
    y = rng.integers(0, 3, 40).astype(np.int32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    theta, unravel = jax.flatten_util.ravel_pytree(params)
    ce = lambda t: -jnp.take_along_axis(jax.nn.log_softmax(nnx.merge(graphdef, unravel(t), rest)(x)), y[:, None], 1).mean()
    exact = np.linalg.eigvalsh(hs.hessian_matrix(ce, theta))
    assert exact[0] < -1e-3 < 1e-3 < exact[-1]  # indefinite, so both Lanczos ends are a real test
    scale = np.abs(exact).max()

    s = hs.model_spectrum(model, x, y, lanczos_iters=40, probes=400, slq_probes=2, chunk=100, seed=1)
    assert s["num_params"] == theta.size == 68 and s["num_images"] == 40 and s["lanczos_iters"] == 40
    assert s["loss"] == pytest.approx(float(ce(theta)), rel=1e-6)
    # float32 Lanczos, 40 of 68 steps: both extremes to 1e-4 of the spectral radius, inside the spectrum
    assert abs(s["lanczos_min"] - exact[0]) < 1e-4 * scale and abs(s["lanczos_max"] - exact[-1]) < 1e-4 * scale
    assert s["lanczos_min"] >= exact[0] - 1e-5 * scale and s["lanczos_max"] <= exact[-1] + 1e-5 * scale
    assert abs(s["trace"] - exact.sum()) < 4 * s["trace_stderr"] < 0.2 * abs(exact.sum())  # 4 sigma: p ~ 6e-5
    assert s["hutchinson_probes"] == 400 and set(s["seconds"]) == {"lanczos", "hutchinson", "slq"}
    nodes, weights = np.array(s["slq_nodes"]), np.array(s["slq_weights"])
    assert nodes.shape == weights.shape == (2, 40)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    assert "exact" not in s

    # per_example is the loss measured (twice the CE: twice the Hessian), and exact=True diagonalises it.
    doubled = hs.model_spectrum(model, x, y, per_example=lambda z, t: 2 * optax.softmax_cross_entropy_with_integer_labels(z, t),
                                lanczos_iters=4, probes=2, seed=1, exact=True)
    assert doubled["loss"] == pytest.approx(2 * s["loss"], rel=1e-6)
    np.testing.assert_allclose(doubled["exact"]["eigenvalues"], 2 * exact, atol=1e-9 * scale)
    ex = doubled["exact"]
    assert (ex["min"], ex["max"], ex["trace"]) == (pytest.approx(2 * exact[0]), pytest.approx(2 * exact[-1]),
                                                   pytest.approx(2 * exact.sum()))


def _sigmoid_mse_one(w):  # (sigma(w) - 0)^2: one example x = 1, y = 0
    return jax.nn.sigmoid(w[0]) ** 2


def test_curvature_certificate_matches_closed_form():
    """l(w) = sigma(w)^2 has l'' = 2 s^2 (1-s)(2-3s): negative exactly for w > ln 2."""
    closed = lambda w: (lambda s: 2 * s**2 * (1 - s) * (2 - 3 * s))(1 / (1 + np.exp(-w)))
    cert = hs.curvature_certificate(_sigmoid_mse_one, [2.0], [1.0])
    assert cert.curvature == pytest.approx(closed(2.0), rel=1e-12)
    assert cert.curvature == pytest.approx(-0.118814, abs=5e-7)
    assert hs.verify(cert, _sigmoid_mse_one)
    assert not hs.verify(hs.curvature_certificate(_sigmoid_mse_one, [0.5], [1.0]), _sigmoid_mse_one)  # l'' > 0
    assert hs.verify(hs.curvature_certificate(_sigmoid_mse_one, [np.log(2) + 1e-3], [1.0]), _sigmoid_mse_one)


def test_forged_certificates_are_rejected():
    ce = lambda w: jnp.logaddexp(0.0, w[0])  # binary CE of one example x = 1, y = 0: convex
    real = hs.curvature_certificate(_sigmoid_mse_one, [2.0], [1.0])
    assert not hs.verify(real, ce)  # the same point and direction prove nothing for the convex CE
    forged = hs.CurvatureCertificate(np.array([0.0]), np.array([1.0]), -0.1)  # l''(0) = +1/8 > 0 in truth
    assert not hs.verify(forged, _sigmoid_mse_one)
    inflated = hs.CurvatureCertificate(real.point, real.direction, 10 * real.curvature)  # wrong number
    assert not hs.verify(inflated, _sigmoid_mse_one)
    mid = hs.midpoint_certificate(_sigmoid_mse_one, [1.0], [5.0])
    assert mid.gap > 0 and hs.verify(mid, _sigmoid_mse_one)
    assert not hs.verify(hs.MidpointCertificate(np.array([-3.0]), np.array([0.0]), 0.01), _sigmoid_mse_one)  # convex piece
    assert not hs.verify(hs.midpoint_certificate(ce, [1.0], [5.0]), ce)
