"""Q2, deep *linear* binary classifiers: neither CE nor MSE is convex in the parameters (verified
certificates at depth 1 and 2), both are convex in the end-to-end product, and the multiple-choice answer
is derived from those booleans."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments.convexity.losses import sigmoid_ce, squared_error
from experiments.convexity.problems import logistic_data
from jaxdl import hessian as hs

Array = jax.Array

# What the two course reports in shared/seeds answered to Q2 (the files' own words, summarised).
SEED_ANSWERS = {
    "seeds/000 (G. Birua)": ("a", "CE ensures convex optimization"),
    "seeds/001 (P. Chachondhia)": ("d", "neither CE nor MSE guarantees convexity"),
}
CHOICES = {"a": "CE", "b": "MSE", "c": "both CE and MSE", "d": "none"}
LOSSES = {"ce": sigmoid_ce, "mse": squared_error}


def linear_net(depth: int, d: int, h: int) -> tuple[Callable[[Array], list[Array]], int]:
    """Parameters of a bias-free linear net with `depth` hidden layers of width h (bias via a constant
    input column): shapes d x h, (h x h)*, h.  Returns (split flat vector into factors, size)."""
    shapes = [(d, h)] + [(h, h)] * (depth - 1) + [(h,)]
    sizes = [int(np.prod(s)) for s in shapes]

    def factors(theta: Array) -> list[Array]:
        parts = jnp.split(theta, np.cumsum(sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, shapes)]

    return factors, sum(sizes)


def end_to_end(factors: list[Array]) -> Array:
    """The product W_1 ... w_L: the linear classifier the factorised net computes."""
    beta = factors[0]
    for f in factors[1:]:
        beta = beta @ f
    return beta


def case(rng: np.random.Generator, depth: int, loss_name: str, x: np.ndarray, y: np.ndarray, h: int,
         points: int) -> dict:
    """Non-convexity certificates for one (depth, loss): negative curvature and a Jensen midpoint gap."""
    per_example = LOSSES[loss_name]
    d = x.shape[1]
    factors, n = linear_net(depth, d, h)
    loss = lambda theta: per_example(jnp.asarray(x) @ end_to_end(factors(theta)), jnp.asarray(y)).mean()

    zero = np.zeros(n)
    h0 = hs.hessian_matrix(loss, zero)
    eig0, vec0 = np.linalg.eigh(h0)
    g0 = np.asarray(jax.grad(lambda b: per_example(jnp.asarray(x) @ b, jnp.asarray(y)).mean())(jnp.zeros(d)))
    origin = {"min_eigenvalue": float(eig0[0]), "max_abs_hessian": float(np.abs(h0).max()),
              "norm_grad_product": float(np.linalg.norm(g0))}

    # Negative curvature: at the origin when it is a strict saddle (1 hidden layer), else the most
    # negative eigenvector over random points (the origin's Hessian is exactly zero for depth >= 2).
    candidates = [(eig0[0], zero, vec0[:, 0])]
    for _ in range(points):
        p = 0.5 * rng.normal(size=n)
        eig, vec = hs.hessian_eigh(loss, p)
        candidates.append((eig[0], p, vec[:, 0]))
    lam = min(c[0] for c in candidates)
    _, point, direction = candidates[0] if eig0[0] < 0 else min(candidates, key=lambda t: t[0])
    curv = hs.curvature_certificate(loss, point, direction)

    # Jensen: fit theta* (plain GD on the flat vector: any point better than the zero classifier will do),
    # flip the sign of the first and last factor (same end-to-end map, same loss); their midpoint has a
    # zero first factor, i.e. the zero classifier, which is worse than theta*.
    descend = jax.jit(lambda t: lax.scan(lambda t, _: (t - 0.05 * jax.grad(loss)(t), None), t, length=300)[0])
    theta = np.asarray(descend(jnp.asarray(0.3 * rng.normal(size=n), jnp.float32)), np.float64)
    sizes = [int(np.prod(f.shape)) for f in factors(jnp.asarray(theta))]
    flip = np.ones(n)
    flip[: sizes[0]] = -1
    flip[n - sizes[-1]:] = -1
    mid = hs.midpoint_certificate(loss, theta, flip * theta)
    ok_curv, ok_mid = hs.verify(curv, loss), hs.verify(mid, loss)
    return {
        "convex": not (ok_curv or ok_mid),
        "certificate": curv.to_json() | {"verified": ok_curv},
        "midpoint_certificate": mid.to_json() | {"verified": ok_mid, "loss_fitted": float(loss(theta)),
                                                 "loss_zero_classifier": float(loss(zero))},
        "min_eigenvalue": float(lam),
        "num_params": n,
        "origin": origin,
    }


def run(rng: np.random.Generator, points: int) -> dict:
    """All of Q2: depth 1 and 2 for both losses, the end-to-end check, the scalar chain, the answer."""
    x, y = logistic_data(rng, 64, 4, 2)
    y = y.astype(np.float32)
    out: dict = {"data": {"n": len(x), "d": x.shape[1], "hidden_width": 3}}
    for depth in (1, 2):
        out[f"hidden_layers_{depth}"] = {name: case(rng, depth, name, x, y, 3, points) for name in LOSSES}

    # Convex in the end-to-end vector beta: the Hessians are X^T diag(p(1-p)) X / n and 2 X^T X / n.
    e2e = {}
    for name, per_example in LOSSES.items():
        f = lambda b, pe=per_example: pe(jnp.asarray(x) @ b, jnp.asarray(y)).mean()
        lo = min(np.linalg.eigvalsh(hs.hessian_matrix(f, 3 * rng.normal(size=x.shape[1])))[0] for _ in range(points))
        e2e[name] = {"convex": bool(lo >= -1e-12), "min_eigenvalue": float(lo), "points": points}
    out["end_to_end"] = e2e

    # The note's scalar chain: CE(a*b*c; y=1) at (1, 0, 0) has Hessian eigenvalues {-1/2, 0, 1/2}.
    chain = lambda t: sigmoid_ce(t[0] * t[1] * t[2], 1.0)
    out["scalar_chain_eigenvalues"] = np.linalg.eigvalsh(hs.hessian_matrix(chain, [1.0, 0.0, 0.0])).tolist()

    ce_convex = out["hidden_layers_1"]["ce"]["convex"] and out["hidden_layers_2"]["ce"]["convex"]
    mse_convex = out["hidden_layers_1"]["mse"]["convex"] and out["hidden_layers_2"]["mse"]["convex"]
    out["answer"] = {(True, True): "c", (True, False): "a", (False, True): "b", (False, False): "d"}[(ce_convex, mse_convex)]
    out["seed_answers"] = {k: {"answer": a, "claim": c, "correct": a == out["answer"]} for k, (a, c) in SEED_ANSWERS.items()}
    return out
