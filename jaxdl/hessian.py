"""Second-order analysis of JAX losses: exact Hessians, matrix-free curvature, certificates.

Everything works on a *flat* parameter vector (``jax.flatten_util.ravel_pytree``) because the linear
algebra (Lanczos, Hutchinson, eigendecompositions, certificates) is defined on R^n, while losses are
written on pytrees.  Two regimes:

* small problems (logistic regression, deep linear nets, tiny models): the dense Hessian is built with
  ``jax.hessian`` in float64 (``jax.enable_x64`` scoped to the call, never global) and diagonalised
  exactly, so "convex" / "not convex" is decided by an eigenvalue with float64 rounding only;
* real networks: the Hessian is a :class:`Operator` (Hessian-vector products by forward-over-reverse
  differentiation) and its spectrum is probed by Lanczos with full reorthogonalisation, Hutchinson's
  trace estimator and stochastic Lanczos quadrature, each one jitted program; :func:`model_spectrum` runs
  them all on an ``nnx`` model's loss in one call.

Non-convexity is reported as a *certificate* that anybody can re-check with :func:`verify`: either a
direction of negative curvature (one float64 HVP) or a violated Jensen midpoint inequality (three loss
evaluations, no derivatives at all).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.tree_util import Partial

PyTree = Any
FlatLoss = Callable[[jax.Array], jax.Array]
BatchLoss = Callable[[jax.Array, PyTree], jax.Array]


# ----------------------------------------------------------------------------------------------------
# Flat losses and exact Hessians
# ----------------------------------------------------------------------------------------------------


def flatten_loss(loss: Callable[[PyTree], jax.Array], params: PyTree) -> tuple[FlatLoss, jax.Array, Callable]:
    """Turn ``loss(params)`` into ``loss_flat(theta)`` on R^n plus the point ``theta0`` and ``unravel``.

    ``ravel_pytree``'s unravel is dtype-polymorphic when all leaves share a dtype, so the same flat loss
    evaluates in float32 or (under ``jax.enable_x64``) float64 depending on the vector it is given.
    """
    theta0, unravel = ravel_pytree(params)
    return (lambda theta: loss(unravel(theta))), theta0, unravel


def hvp(loss: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """H(params) v by forward-over-reverse (``jax.jvp`` of ``jax.grad``): one gradient's cost, no H."""
    return jax.jvp(jax.grad(loss), (params,), (v,))[1]


@functools.lru_cache(maxsize=32)
def _compiled_hessian(loss_flat: FlatLoss) -> Callable[[jax.Array], jax.Array]:
    # One compiled program per loss function, reused across the many points a convexity scan visits.
    return jax.jit(jax.hessian(loss_flat))


def hessian_matrix(loss_flat: FlatLoss, theta: Any) -> np.ndarray:
    """Dense Hessian of ``loss_flat`` at ``theta`` in float64 (n x n; only for n up to a few thousand)."""
    with jax.enable_x64(True):
        return np.asarray(_compiled_hessian(loss_flat)(jnp.asarray(np.asarray(theta, np.float64))), np.float64)


def hessian_eigh(loss_flat: FlatLoss, theta: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact eigenvalues (ascending) and eigenvectors (columns) of the float64 Hessian at ``theta``."""
    h = hessian_matrix(loss_flat, theta)
    return np.linalg.eigh(0.5 * (h + h.T))


# ----------------------------------------------------------------------------------------------------
# Matrix-free Hessian operators
# ----------------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Operator:
    """The Hessian at ``point`` as a pytree-callable ``matvec`` on flat vectors.

    Being a pytree (``matvec`` is a :class:`jax.tree_util.Partial` whose leaves are the point, the data
    or cached linearisation residuals) lets every algorithm below take it as a *traced argument* of one
    ``jax.jit``: large arrays are never baked into the compiled program as constants, and the program is
    compiled once per operator structure, not once per call.  The algorithms call it inside rolled
    ``lax.scan`` loops, so compile time does not grow with the number of iterations; on CPU that is only
    fast because jaxdl's convolutions state their derivatives in canonical form (``jaxdl.models.conv``).
    """

    matvec: Partial
    point: jax.Array

    @property
    def dim(self) -> int:
        return int(self.point.size)

    @property
    def dtype(self) -> Any:
        return self.point.dtype


def _jvp_of_grad(loss_flat: FlatLoss, theta: jax.Array, v: jax.Array) -> jax.Array:
    return jax.jvp(jax.grad(loss_flat), (theta,), (v,))[1]


def operator(loss_flat: FlatLoss, point: jax.Array, *, cache: bool = True) -> Operator:
    """Hessian operator of a full-batch loss.

    ``cache=True`` linearises the gradient once (``jax.linearize``): the forward and backward passes'
    residuals are stored and each HVP afterwards only runs the tangent pass -- the JAX counterpart of
    PyHessian's ``backward(create_graph=True)`` done once per batch.  ``cache=False`` recomputes them
    per product and needs no memory beyond one gradient evaluation.
    """
    point = jnp.asarray(point)
    if cache:
        return Operator(_linearizer(loss_flat)(point), point)
    return Operator(Partial(_hvp_fn(loss_flat), point), point)


# Cached per loss function so that operators built again for the same loss (another point, another run)
# have an identical pytree structure and reuse every compiled algorithm instead of recompiling.
@functools.lru_cache(maxsize=32)
def _linearizer(loss_flat: FlatLoss) -> Callable[[jax.Array], Partial]:
    return jax.jit(lambda x: jax.linearize(jax.grad(loss_flat), x)[1])


@functools.lru_cache(maxsize=32)
def _hvp_fn(loss_flat: FlatLoss) -> Callable[[jax.Array, jax.Array], jax.Array]:
    return functools.partial(_jvp_of_grad, loss_flat)


def _dataset_hvp(batch_loss: BatchLoss, theta: jax.Array, batches: PyTree, v: jax.Array) -> jax.Array:
    def body(acc: jax.Array, batch: PyTree) -> tuple[jax.Array, None]:
        return acc + _jvp_of_grad(lambda t: batch_loss(t, batch), theta, v), None

    return lax.scan(body, jnp.zeros_like(v), batches)[0]


def dataset_operator(batch_loss: BatchLoss, point: jax.Array, batches: PyTree) -> Operator:
    """Hessian of ``sum_b batch_loss(theta, batches[b])`` where every leaf of ``batches`` is stacked on
    a leading batch axis (see :func:`stack_batches`).

    The sum over batches runs under ``lax.scan`` inside the same jitted program as the algorithm using
    it, so the per-batch HVP is compiled once and memory stays at one batch's activations.
    """
    point = jnp.asarray(point)
    return Operator(Partial(functools.partial(_dataset_hvp, batch_loss), point, batches), point)


def dataset_loss(batch_loss: BatchLoss, theta: jax.Array, batches: PyTree) -> jax.Array:
    """``sum_b batch_loss(theta, batches[b])``: the loss whose Hessian :func:`dataset_operator` is."""
    return lax.scan(lambda acc, b: (acc + batch_loss(theta, b), None), jnp.zeros((), theta.dtype), batches)[0]


def stack_batches(*arrays: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    """Split equally long arrays into ``(num_batches, batch_size, ...)`` stacks plus a weight stack.

    The last batch is zero-padded; the returned weights are ``1/N`` for real examples and ``0`` for
    padding, so ``sum(w * per_example_loss)`` summed over batches is exactly the dataset mean.
    """
    n = len(arrays[0])
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    out = []
    for a in arrays:
        a = np.asarray(a)
        a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
        out.append(a.reshape(nb, batch_size, *a.shape[1:]))
    w = np.concatenate([np.full(n, 1.0 / n, np.float32), np.zeros(pad, np.float32)])
    return (*out, w.reshape(nb, batch_size))


def model_batch_loss(
    model: Any, per_example: Callable[[jax.Array, jax.Array], jax.Array]
) -> tuple[BatchLoss, jax.Array, Callable]:
    """For an ``nnx`` model: ``batch_loss(theta, (x, y, w)) = sum(w * per_example(model(x), y))``.

    The model is cloned and put in eval mode (BatchNorm uses its running statistics, dropout is off),
    then split into (graphdef, params, rest): only ``nnx.Param`` leaves are differentiated, the running
    statistics are frozen constants -- the Hessian of the function the model computes at inference,
    which is what PyHessian measures too (it calls ``model.eval()``).  The caller's model is untouched.
    """
    from flax import nnx

    model = nnx.clone(model)
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    theta0, unravel = ravel_pytree(params)

    def batch_loss(theta: jax.Array, batch: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        x, y, w = batch
        logits = nnx.merge(graphdef, unravel(theta), rest)(x)
        return jnp.sum(w * per_example(logits, y))

    return batch_loss, theta0, unravel


# ----------------------------------------------------------------------------------------------------
# Spectral algorithms (each one jitted program)
# ----------------------------------------------------------------------------------------------------


def _normalize(v: jax.Array) -> jax.Array:
    return v / jnp.linalg.norm(v)


@functools.partial(jax.jit, static_argnames="num_iter")
def power_iteration(op: Operator, num_iter: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Largest-|lambda| eigenpair by ``num_iter`` plain power steps (PyHessian's algorithm, for
    like-for-like benchmarks; prefer :func:`lanczos`, which converges faster and gives both ends)."""
    v = _normalize(jax.random.normal(key, (op.dim,), op.dtype))

    def body(carry: tuple[jax.Array, jax.Array], _: None) -> tuple[tuple[jax.Array, jax.Array], None]:
        v, _lam = carry
        hv = op.matvec(v)
        return (_normalize(hv), jnp.vdot(v, hv)), None

    (v, lam), _ = lax.scan(body, (v, jnp.zeros((), op.dtype)), length=num_iter)
    return lam, v


@functools.partial(jax.jit, static_argnames="num_iter")
def lanczos(op: Operator, num_iter: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lanczos tridiagonalisation with full reorthogonalisation; returns ``(alphas, betas)``.

    Full reorthogonalisation (Gram-Schmidt against all previous vectors, applied twice -- "twice is
    enough") keeps the basis orthogonal in floating point, so Ritz values do not produce ghost copies
    and the extremes are trustworthy on both ends.  If the Krylov space becomes invariant (beta ~ 0,
    common for low-rank Hessians) the iteration restarts from a fresh random vector orthogonal to the
    basis and records beta = 0, so T decouples into blocks whose eigenvalues are all eigenvalues of H.
    ``num_iter`` is capped at ``dim``.  Memory: ``num_iter * dim`` numbers for the basis.
    """
    m = min(num_iter, op.dim)
    key, k0 = jax.random.split(key)
    basis = jnp.zeros((m + 1, op.dim), op.dtype).at[0].set(_normalize(jax.random.normal(k0, (op.dim,), op.dtype)))
    eps = jnp.finfo(op.dtype).eps

    def orthogonalize(w: jax.Array, basis: jax.Array) -> jax.Array:
        w = w - basis.T @ (basis @ w)
        return w - basis.T @ (basis @ w)

    def step(carry: tuple[jax.Array, jax.Array], j: jax.Array) -> tuple[tuple[jax.Array, jax.Array], tuple]:
        basis, beta_prev = carry
        v, v_prev = basis[j], basis[jnp.maximum(j - 1, 0)]
        hv = op.matvec(v)
        alpha = jnp.vdot(v, hv)
        w = orthogonalize(hv - alpha * v - beta_prev * v_prev, basis)
        beta = jnp.linalg.norm(w)
        broke = beta <= 100 * eps * jnp.maximum(jnp.linalg.norm(hv), eps)
        restart = lambda: _normalize(orthogonalize(jax.random.normal(jax.random.fold_in(key, j), (op.dim,), op.dtype), basis))
        v_next = lax.cond(broke, restart, lambda: w / beta)
        beta = jnp.where(broke, 0.0, beta)
        return (basis.at[j + 1].set(v_next), beta), (alpha, beta)

    _, (alphas, betas) = lax.scan(step, (basis, jnp.zeros((), op.dtype)), jnp.arange(m))
    return alphas, betas[:-1]


def ritz(alphas: Any, betas: Any) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of the Lanczos tridiagonal T and the squared first components of its eigenvectors
    (the Gauss quadrature nodes and weights of the spectral measure seen from the start vector)."""
    a, b = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    t = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    theta, s = np.linalg.eigh(t)
    return theta, s[0] ** 2


def extreme_eigenvalues(op: Operator, num_iter: int, key: jax.Array) -> tuple[float, float]:
    """(lambda_min, lambda_max) estimated by the extreme Ritz values of ``num_iter`` Lanczos steps.

    Ritz values are interlaced inside the spectrum, so they are an *upper* bound on lambda_min and a
    lower bound on lambda_max (exact in exact arithmetic once num_iter = dim).
    """
    theta, _ = ritz(*lanczos(op, num_iter, key))
    return float(theta[0]), float(theta[-1])


@functools.partial(jax.jit, static_argnames=("num_probes", "chunk"))
def hutchinson_trace(
    op: Operator, num_probes: int, key: jax.Array, chunk: int | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Hutchinson's estimator tr(H) ~ mean_i z_i^T H z_i with Rademacher z_i; returns (mean, stderr,
    samples).  Probes are vmapped ``chunk`` at a time (it must divide ``num_probes``), the chunks run in
    a loop.  Default: all at once on accelerators; one at a time on CPU, where a vmapped product measured
    3x slower per probe than a single one (XLA:CPU fuses the batched layouts into slow transposes)."""
    chunk = chunk or (1 if jax.default_backend() == "cpu" else num_probes)
    if num_probes % chunk:
        raise ValueError(f"chunk={chunk} must divide num_probes={num_probes}")
    z = jax.random.rademacher(key, (num_probes // chunk, chunk, op.dim), op.dtype)
    quad = lambda zi: jnp.vdot(zi, op.matvec(zi))
    quads = jax.vmap(quad) if chunk > 1 else lambda zc: quad(zc[0])[None]  # a vmap of one still batches
    _, samples = lax.scan(lambda c, zc: (c, quads(zc)), None, z)
    samples = samples.reshape(num_probes)
    return samples.mean(), samples.std(ddof=1) / jnp.sqrt(num_probes), samples


def slq(op: Operator, num_iter: int, num_probes: int, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: Ritz nodes and weights, shape (num_probes, m), one Lanczos run per
    random start vector (sequential calls of the one compiled :func:`lanczos`, so memory is one basis).
    The spectral density is their average of point masses; :func:`spectral_density` smooths it."""
    pairs = [ritz(*lanczos(op, num_iter, k)) for k in jax.random.split(key, num_probes)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def spectral_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-broadened SLQ density on ``grid`` (integrates to ~1; multiply by dim for counts)."""
    d = grid[:, None, None] - nodes[None]
    g = np.exp(-0.5 * (d / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return (g * weights[None]).sum(-1).mean(-1)


# ----------------------------------------------------------------------------------------------------
# A model's curvature in one call
# ----------------------------------------------------------------------------------------------------


def model_spectrum(
    model: Any,
    x: Any,
    y: Any,
    *,
    per_example: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    lanczos_iters: int = 20,
    probes: int = 20,
    slq_probes: int = 1,
    chunk: int | None = None,
    seed: int = 0,
    exact: bool = False,
) -> dict[str, Any]:
    """Curvature summary of an ``nnx`` model's eval-mode mean loss on the batch ``(x, y)``.

    The loss is ``mean_i per_example(model(x)_i, y_i)`` with BatchNorm on its running statistics and dropout
    off (see :func:`model_batch_loss`; the caller's model is untouched), differentiated in the model's
    ``nnx.Param`` leaves.  ``per_example`` defaults to softmax cross-entropy with integer labels, the loss
    :mod:`jaxdl.train` minimises, so a trained model is measured on its own objective.  One call runs, from
    ``jax.random.key(seed)``:

    * ``lanczos_iters`` Lanczos steps for the extreme eigenvalues (:func:`extreme_eigenvalues`);
    * Hutchinson's trace with ``probes`` Rademacher probes, ``chunk`` at a time (:func:`hutchinson_trace`);
    * ``slq_probes`` stochastic-Lanczos-quadrature runs of ``lanczos_iters`` steps (:func:`slq`);
    * with ``exact=True`` the dense float64 Hessian, diagonalised -- only for models of up to a few thousand
      parameters, as the ground truth the estimates can be checked against.

    Returns a JSON-ready dict: ``num_params``, ``num_images``, ``loss``, ``lanczos_min``, ``lanczos_max``,
    ``lanczos_iters`` (capped at ``num_params``), ``trace``, ``trace_stderr``, ``hutchinson_probes``,
    ``slq_nodes`` and ``slq_weights`` (``slq_probes`` lists each), ``seconds`` (wall time of ``lanczos``,
    ``hutchinson`` and ``slq``, compilation included), and with ``exact`` an ``exact`` entry holding ``min``,
    ``max``, ``trace`` and the ascending ``eigenvalues``.
    """
    import optax

    batch_loss, theta, _ = model_batch_loss(model, per_example or optax.softmax_cross_entropy_with_integer_labels)
    data = (jnp.asarray(x), jnp.asarray(y), jnp.full(len(x), 1.0 / len(x), jnp.float32))
    loss_flat = lambda t: batch_loss(t, data)
    op = operator(loss_flat, theta)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    lo, hi = extreme_eigenvalues(op, lanczos_iters, key)
    t1 = time.perf_counter()
    tr, se, _ = hutchinson_trace(op, probes, key, chunk=chunk)
    t2 = time.perf_counter()
    nodes, weights = slq(op, lanczos_iters, slq_probes, key)
    t3 = time.perf_counter()
    out = {"num_params": int(theta.size), "num_images": len(x), "loss": float(loss_flat(theta)),
           "lanczos_min": lo, "lanczos_max": hi, "lanczos_iters": min(lanczos_iters, int(theta.size)),
           "trace": float(tr), "trace_stderr": float(se), "hutchinson_probes": probes,
           "slq_nodes": nodes.tolist(), "slq_weights": weights.tolist(),
           "seconds": {"lanczos": t1 - t0, "hutchinson": t2 - t1, "slq": t3 - t2}}
    if exact:
        eig = np.linalg.eigvalsh(hessian_matrix(loss_flat, theta))
        out["exact"] = {"min": float(eig[0]), "max": float(eig[-1]), "trace": float(eig.sum()),
                        "eigenvalues": eig.tolist()}
    return out


# ----------------------------------------------------------------------------------------------------
# Certificates of non-convexity
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CurvatureCertificate:
    """``L`` is not convex: at ``point`` the unit ``direction`` v has v^T H v = ``curvature`` < 0."""

    point: np.ndarray
    direction: np.ndarray
    curvature: float

    def to_json(self) -> dict:
        return {"kind": "curvature", "point": self.point.tolist(), "direction": self.direction.tolist(),
                "curvature": self.curvature}


@dataclasses.dataclass(frozen=True)
class MidpointCertificate:
    """``L`` is not convex: ``gap = L((a+b)/2) - (L(a)+L(b))/2 > 0`` (Jensen's inequality fails)."""

    a: np.ndarray
    b: np.ndarray
    gap: float

    def to_json(self) -> dict:
        return {"kind": "midpoint", "a": self.a.tolist(), "b": self.b.tolist(), "gap": self.gap}


Certificate = CurvatureCertificate | MidpointCertificate


def _curvature64(loss_flat: FlatLoss, point: np.ndarray, direction: np.ndarray) -> float:
    with jax.enable_x64(True):
        x, v = jnp.asarray(point, jnp.float64), jnp.asarray(direction, jnp.float64)
        return float(jnp.vdot(v, _jvp_of_grad(loss_flat, x, v)))


def _midpoint_gap64(loss_flat: FlatLoss, a: np.ndarray, b: np.ndarray) -> float:
    with jax.enable_x64(True):
        a64, b64 = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
        return float(loss_flat(0.5 * (a64 + b64)) - 0.5 * (loss_flat(a64) + loss_flat(b64)))


def curvature_certificate(loss_flat: FlatLoss, point: Any, direction: Any) -> CurvatureCertificate:
    """Measure v^T H v (v normalised) at ``point`` with one float64 HVP; the result certifies
    non-convexity iff ``curvature < 0`` (check with :func:`verify`)."""
    p, v = np.asarray(point, np.float64), np.asarray(direction, np.float64)
    v = v / np.linalg.norm(v)
    return CurvatureCertificate(p, v, _curvature64(loss_flat, p, v))


def midpoint_certificate(loss_flat: FlatLoss, a: Any, b: Any) -> MidpointCertificate:
    """Measure the Jensen midpoint gap between ``a`` and ``b`` in float64 (a certificate iff gap > 0)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return MidpointCertificate(a64, b64, _midpoint_gap64(loss_flat, a64, b64))


def verify(cert: Certificate, loss_flat: FlatLoss, *, rtol: float = 1e-6, atol: float = 1e-10) -> bool:
    """Re-check a certificate from scratch in float64; True iff it proves ``loss_flat`` is not convex.

    The claimed number must be reproduced (to ``rtol``/``atol``) *and* have the right sign beyond
    ``atol``.  A curvature certificate is additionally cross-checked without derivatives by the central
    second difference of L along v (step 1e-4; it must be negative too), so a wrong autodiff rule
    could not pass it alone.
    """
    if isinstance(cert, MidpointCertificate):
        gap = _midpoint_gap64(loss_flat, cert.a, cert.b)
        return bool(gap > atol and abs(gap - cert.gap) <= rtol * abs(gap) + atol)
    v = cert.direction / np.linalg.norm(cert.direction)
    q = _curvature64(loss_flat, cert.point, v)
    h = 1e-4
    with jax.enable_x64(True):
        x, v64 = jnp.asarray(cert.point, jnp.float64), jnp.asarray(v, jnp.float64)
        fd = float((loss_flat(x + h * v64) - 2 * loss_flat(x) + loss_flat(x - h * v64)) / h**2)
    return bool(q < -atol and fd < 0 and abs(q - cert.curvature) <= rtol * abs(q) + atol)
