"""The losses the study compares, and the closed forms of their second derivatives.

The closed forms are what makes the verdicts more than numerics: the study checks jax.hessian against them,
and they show *why* CE is convex (sums of PSD terms) and where MSE on the sigmoid bends the wrong way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array

# Softmax CE with integer labels: the loss jaxdl trains and measures spectra with, so Q1's multi-class
# check is about that very function.
softmax_ce = optax.softmax_cross_entropy_with_integer_labels


def sigmoid_ce(z: Array, y: Array) -> Array:
    """Binary CE on logits, y in {0,1}: log(1+e^z) - y z (stable form)."""
    return jnp.logaddexp(0.0, z) - y * z


def sigmoid_mse(z: Array, y: Array) -> Array:
    """Squared error of the sigmoid probability: (sigma(z) - y)^2."""
    return (jax.nn.sigmoid(z) - y) ** 2


def squared_error(z: Array, y: Array) -> Array:
    """Squared error of the raw output, (z - y)^2: Q2's MSE, on a linear classifier with no sigmoid."""
    return (z - y) ** 2


def mse_sigmoid_curvature(w: float, x: float = 1.0, y: float = 0.0) -> float:
    """d^2/dw^2 (sigma(wx) - y)^2 = 2x^2 s(1-s) [s(1-s) + (s-y)(1-2s)]; for x=1, y=0: 2s^2(1-s)(2-3s)."""
    s = 1.0 / (1.0 + np.exp(-w * x))
    return float(2 * x**2 * s * (1 - s) * (s * (1 - s) + (s - y) * (1 - 2 * s)))


def binary_ce_hessian(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Hessian of mean sigmoid CE of logistic regression: X^T diag(p(1-p)) X / n -- PSD by inspection."""
    x = np.asarray(x, np.float64)
    p = 1 / (1 + np.exp(-x @ w))
    return x.T @ (x * (p * (1 - p))[:, None]) / len(x)


def softmax_ce_hessian(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Hessian of mean softmax CE in vec(W) (W: d x K, row-major): mean_i (x_i x_i^T) kron (diag p_i - p_i p_i^T).

    Each factor is PSD, so is the sum; diag(p) - pp^T kills the all-ones vector, so every vec(a 1^T)
    is a null direction: convex but never strictly.
    """
    x = np.asarray(x, np.float64)
    z = x @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return sum(np.kron(np.outer(xi, xi), np.diag(pi) - np.outer(pi, pi)) for xi, pi in zip(x, p)) / len(x)
