"""Closed forms and certificates behind experiments.convexity (small, exact, float64)."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import convexity as cx
from jaxdl import hessian as hs


def test_mse_sigmoid_curvature_closed_form_and_certificate():
    one = lambda w: cx.sigmoid_mse(w[0], 0.0)
    s = 1 / (1 + np.exp(-2.0))
    assert cx.mse_sigmoid_curvature(2.0) == pytest.approx(2 * s**2 * (1 - s) * (2 - 3 * s), rel=1e-14)
    assert cx.mse_sigmoid_curvature(2.0) == pytest.approx(-0.118814, abs=5e-7)
    cert = hs.curvature_certificate(one, [2.0], [1.0])
    assert cert.curvature == pytest.approx(cx.mse_sigmoid_curvature(2.0), rel=1e-12)
    assert hs.verify(cert, one)
    assert cx.mse_sigmoid_curvature(0.5) > 0 and cx.mse_sigmoid_curvature(np.log(2) + 1e-3) < 0  # sign flips at ln 2


def test_forged_certificates_are_rejected():
    one = lambda w: cx.sigmoid_mse(w[0], 0.0)
    ce = lambda w: cx.sigmoid_ce(w[0], 0.0)
    real = hs.curvature_certificate(one, [2.0], [1.0])
    assert not hs.verify(real, ce)  # the same point and direction prove nothing for the convex CE
    forged = hs.CurvatureCertificate(np.array([0.0]), np.array([1.0]), -0.1)  # l''(0) = +1/8 > 0 in truth
    assert not hs.verify(forged, one)
    inflated = hs.CurvatureCertificate(real.point, real.direction, 10 * real.curvature)  # wrong number
    assert not hs.verify(inflated, one)
    mid = hs.midpoint_certificate(one, [1.0], [5.0])
    assert mid.gap > 0 and hs.verify(mid, one)
    assert not hs.verify(hs.MidpointCertificate(np.array([-3.0]), np.array([0.0]), 0.01), one)  # convex piece
    assert not hs.verify(hs.midpoint_certificate(ce, [1.0], [5.0]), ce)


@pytest.mark.parametrize("seed", range(3))
def test_ce_hessians_equal_closed_forms_and_are_psd(seed):
    rng = np.random.default_rng(seed)
    x, y = cx._logistic_data(rng, 30, 4, 2)
    w = 2 * rng.normal(size=4)
    h = hs.hessian_matrix(lambda v: cx.sigmoid_ce(jnp.asarray(x) @ v, jnp.asarray(y)).mean(), w)
    np.testing.assert_allclose(h, cx.binary_ce_hessian(w, x), atol=1e-14)
    assert np.linalg.eigvalsh(h)[0] > -1e-14

    k = 3
    xs, ys = cx._logistic_data(rng, 30, 4, k)
    wm = 2 * rng.normal(size=(4, k))
    loss = lambda v: cx.softmax_ce(jnp.asarray(xs) @ v.reshape(4, k), jnp.asarray(ys)).mean()
    h = hs.hessian_matrix(loss, wm.ravel())
    np.testing.assert_allclose(h, cx.softmax_ce_hessian(wm, xs), atol=1e-14)
    eig = np.linalg.eigvalsh(h)
    assert eig[0] > -1e-14 and (np.abs(eig) < 1e-12).sum() >= 4  # convex, singular along vec(a 1^T)
    np.testing.assert_allclose(h @ np.outer(rng.normal(size=4), np.ones(k)).ravel(), 0, atol=1e-14)


def test_deep_linear_net_curvature_at_the_origin():
    rng = np.random.default_rng(0)
    x, y = cx._logistic_data(rng, 20, 3, 2)
    g = np.asarray(x.T @ (0.5 - y) / len(x), np.float64)  # grad of mean CE w.r.t. beta at beta = 0
    for depth, expect_zero in ((1, False), (2, True)):
        factors, n = cx.linear_net(depth, 3, 2)
        loss = lambda t: cx.sigmoid_ce(jnp.asarray(x) @ cx.end_to_end(factors(t)), jnp.asarray(y)).mean()
        h = hs.hessian_matrix(loss, np.zeros(n))
        if expect_zero:
            assert np.abs(h).max() == 0.0
        else:
            assert np.linalg.eigvalsh(h)[0] == pytest.approx(-np.linalg.norm(g), rel=1e-6)
    chain = lambda t: cx.sigmoid_ce(t[0] * t[1] * t[2], 1.0)
    np.testing.assert_allclose(np.linalg.eigvalsh(hs.hessian_matrix(chain, [1.0, 0.0, 0.0])), [-0.5, 0, 0.5], atol=1e-15)


def test_q2_answer_is_d_with_verified_certificates():
    r = cx.q2(np.random.default_rng(1), points=3)
    assert r["answer"] == "d"
    for depth in (1, 2):
        for name in ("ce", "mse"):
            case = r[f"hidden_layers_{depth}"][name]
            assert not case["convex"] and case["certificate"]["verified"] and case["midpoint_certificate"]["verified"]
    assert r["end_to_end"]["ce"]["convex"] and r["end_to_end"]["mse"]["convex"]
    assert {k: v["correct"] for k, v in r["seed_answers"].items()} == {"seeds/000 (G. Birua)": False,
                                                                      "seeds/001 (P. Chachondhia)": True}
