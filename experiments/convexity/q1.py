"""Q1, logistic regression: CE is convex (closed form == jax.hessian, PSD everywhere we look), MSE on the
sigmoid is not (verified certificates), and gradient descent from a saturated start shows what that costs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments.convexity.losses import (binary_ce_hessian, mse_sigmoid_curvature, sigmoid_ce, sigmoid_mse,
                                          softmax_ce, softmax_ce_hessian)
from experiments.convexity.problems import logistic_data
from jaxdl import hessian as hs

Array = jax.Array


def run(rng: np.random.Generator, datasets: int, points: int, gd_steps: int, gd_lr: float) -> dict:
    """All of Q1, drawing from `rng` in a fixed order (CE, MSE, training) so a seed fixes every number."""
    return {"ce": ce(rng, datasets, points), "mse": mse(rng), "training": training(rng, gd_steps, gd_lr)}


def ce(rng: np.random.Generator, datasets: int, points: int) -> dict:
    """CE is convex: closed form == jax.hessian, and min eigenvalue >= -tol everywhere we look."""
    err_bin = err_soft = 0.0
    min_bin = min_soft = np.inf
    null_residual = 0.0
    zero_eigs = []
    for _ in range(datasets):
        n, d, k = int(rng.integers(5, 40)), int(rng.integers(2, 6)), int(rng.integers(3, 5))
        xb, yb = logistic_data(rng, n, d, 2)
        xs, ys = logistic_data(rng, n, d, k)
        bin_loss = lambda w, x=xb, y=yb: sigmoid_ce(jnp.asarray(x) @ w, jnp.asarray(y)).mean()
        soft_loss = lambda w, x=xs, y=ys, k=k: softmax_ce(jnp.asarray(x) @ w.reshape(-1, k), jnp.asarray(y)).mean()
        for _ in range(points):
            scale = rng.choice([0.1, 1.0, 5.0])
            w = scale * rng.normal(size=d)
            h = hs.hessian_matrix(bin_loss, w)
            err_bin = max(err_bin, np.abs(h - binary_ce_hessian(w, xb)).max())
            min_bin = min(min_bin, np.linalg.eigvalsh(h)[0])
            wm = scale * rng.normal(size=(d, k))
            h = hs.hessian_matrix(soft_loss, wm.ravel())
            err_soft = max(err_soft, np.abs(h - softmax_ce_hessian(wm, xs)).max())
            eig = np.linalg.eigvalsh(h)
            min_soft = min(min_soft, eig[0])
            zero_eigs.append(int((np.abs(eig) < 1e-12 * max(1.0, eig[-1])).sum()) - d)
            a = rng.normal(size=d)
            null_residual = max(null_residual, np.abs(h @ np.outer(a, np.ones(k)).ravel()).max())
    tol = 1e-12
    return {
        "convex": bool(min_bin >= -tol and min_soft >= -tol and err_bin < 1e-12 and err_soft < 1e-12),
        "certificate": None,
        "min_eigenvalue": float(min(min_bin, min_soft)),
        "tolerance": tol,
        "min_eigenvalue_binary": float(min_bin),
        "min_eigenvalue_softmax": float(min_soft),
        "closed_form_max_abs_error_binary": float(err_bin),
        "closed_form_max_abs_error_softmax": float(err_soft),
        "datasets": datasets,
        "points_per_dataset": points,
        "softmax_null_direction_max_abs_Hv": float(null_residual),
        "softmax_zero_eigenvalues_beyond_d_min": int(min(zero_eigs)),
    }


def mse(rng: np.random.Generator) -> dict:
    """MSE on the sigmoid is not convex: a one-example curvature certificate with a closed form, a
    derivative-free midpoint certificate, and negative curvature found on a real-sized data set."""
    one = lambda w: sigmoid_mse(w[0] * 1.0, 0.0)
    cert = hs.curvature_certificate(one, [2.0], [1.0])
    grid = np.linspace(-4, 8, 25)
    gaps = [(hs.midpoint_certificate(one, [a], [b]).gap, a, b) for a in grid for b in grid if b > a]
    _, a, b = max(gaps)
    mid = hs.midpoint_certificate(one, [a], [b])

    x, y = logistic_data(rng, 200, 4, 2)
    data_loss = lambda w: sigmoid_mse(jnp.asarray(x) @ w, jnp.asarray(y)).mean()
    best = (np.inf, None, None)
    for _ in range(30):
        w = rng.normal(size=4) * rng.choice([1.0, 3.0, 10.0])
        eig, vec = hs.hessian_eigh(data_loss, w)
        best = min(best, (eig[0], w, vec[:, 0]), key=lambda t: t[0])
    data_cert = hs.curvature_certificate(data_loss, best[1], best[2])
    return {
        "convex": not (hs.verify(cert, one) or hs.verify(mid, one) or hs.verify(data_cert, data_loss)),
        "certificate": cert.to_json() | {"example": {"x": 1.0, "y": 0.0}, "verified": hs.verify(cert, one)},
        "closed_form_curvature": mse_sigmoid_curvature(2.0),
        "midpoint_certificate": mid.to_json() | {"verified": hs.verify(mid, one)},
        "dataset_certificate": data_cert.to_json() | {"n": len(x), "verified": hs.verify(data_cert, data_loss)},
        "min_eigenvalue": float(min(best[0], cert.curvature)),
    }


def training(rng: np.random.Generator, steps: int, lr: float) -> dict:
    """Full-batch gradient descent on CE and on MSE from the same saturated, wrong start.

    The GD trajectory itself is what Q1 measures (on a weight vector, with a sigmoid-MSE objective the
    classifier trainer does not offer), so this loop is the experiment, not a way to get a model.
    """
    x, y = logistic_data(rng, 500, 3, 2)
    w_fit = np.linalg.lstsq(x, 2 * y - 1.0, rcond=None)[0]
    w0 = -8 * w_fit / np.linalg.norm(x @ w_fit) * np.sqrt(len(x))  # |logit| ~ 8: sigma saturated, wrong side
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    out = {"n": len(x), "steps": steps, "lr": lr, "start_mean_abs_logit": float(np.abs(x @ w0).mean())}
    for name, per_example in (("ce", sigmoid_ce), ("mse", sigmoid_mse)):
        loss = lambda w, pe=per_example: pe(xj @ w, yj).mean()

        def step(w: Array, _: None, loss=loss) -> tuple[Array, tuple]:
            value, grad = jax.value_and_grad(loss)(w)
            z = xj @ w
            metrics = (value, sigmoid_ce(z, yj).mean(), ((z > 0) == (yj > 0)).mean(), jnp.linalg.norm(grad))
            return w - lr * grad, metrics

        _, metrics = jax.jit(lambda w: lax.scan(step, w, length=steps + 1))(jnp.asarray(w0, jnp.float32))
        out[name] = {k: np.asarray(m).tolist() for k, m in zip(("loss", "ce_of_iterate", "accuracy", "grad_norm"), metrics)}
    best = max(max(out["ce"]["accuracy"]), max(out["mse"]["accuracy"]))
    for name in ("ce", "mse"):
        acc = np.array(out[name]["accuracy"])
        hit = np.nonzero(acc >= best - 0.01)[0]
        out[name]["steps_to_best_acc_minus_1pct"] = int(hit[0]) if hit.size else None
    return out
