"""Course questions Q1/Q2 (CE vs MSE convexity) settled by exact second-order analysis, plus Hessian spectra.

Q1  Logistic regression: CE's Hessian has a closed PSD form (checked against jax.hessian and diagonalised
    at many points and data sets); MSE on the sigmoid gets a verified non-convexity certificate, and
    gradient descent from a saturated start shows what that costs in training.
Q2  Deep *linear* binary classifiers: both losses get verified non-convexity certificates in the
    parameters (negative curvature and a Jensen midpoint violation from the sign-flip symmetry), while
    both are convex in the end-to-end product.  The answer to the multiple-choice question is derived
    from those booleans, not typed in.
Spectra of models trained briefly on scikit-learn's real digits: Lanczos extremes, Hutchinson trace and
    SLQ density, cross-checked against the exact Hessian of a model small enough to diagonalise.

One part per file, each readable alone: `losses` (the losses and their closed-form second derivatives),
`problems` (the synthetic data sets), `q1`, `q2`, `spectra`, `plots`, `report`, and `__main__` (the CLI,
which runs them in that order and writes results.json, report.md and the PNGs).  The Hessian machinery,
certificates and training all come from the library (`jaxdl.hessian`, `jaxdl.train`).
"""
