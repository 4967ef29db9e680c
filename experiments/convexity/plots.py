"""The study's PNGs, drawn on standalone `Figure` objects: no backend switch and no pyplot state, so they
render headless and leave any caller's matplotlib setup alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from experiments.convexity.losses import mse_sigmoid_curvature
from jaxdl.hessian import spectral_density


def save_all(results: dict, out: Path) -> list[str]:
    """Write every plot the results support into `out`; returns the file names."""
    figures = {"q1_curvature.png": q1_curvature(results["q1"]), "q1_training.png": q1_training(results["q1"]["training"])}
    if results.get("spectrum"):
        figures["spectrum_density.png"] = spectrum_density(results["spectrum"])
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
    return list(figures)


def q1_curvature(q1: dict) -> Figure:
    """One example's CE and sigmoid-MSE and their second derivatives, with MSE's certificate marked."""
    w = np.linspace(-4, 8, 400)
    s = 1 / (1 + np.exp(-w))
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots(1, 2)
    ax[0].plot(w, np.logaddexp(0, w), label="CE  log(1+e^w)")
    ax[0].plot(w, s**2, label="MSE  sigma(w)^2")
    ax[0].set(title="one example x=1, y=0", xlabel="w", ylabel="loss")
    ax[1].plot(w, s * (1 - s), label="CE''")
    ax[1].plot(w, [mse_sigmoid_curvature(v) for v in w], label="MSE''")
    c = q1["mse"]["certificate"]
    ax[1].plot(c["point"][0], c["curvature"], "kx", label=f"certificate {c['curvature']:.6f}")
    ax[1].axhline(0, color="grey", lw=0.5)
    ax[1].set(title="second derivative", xlabel="w")
    for a in ax:
        a.legend()
    fig.tight_layout()
    return fig


def q1_training(tr: dict) -> Figure:
    """GD on CE vs on MSE from the saturated start: CE of the iterate, accuracy and gradient norm per step."""
    fig = Figure(figsize=(14, 3.6))
    ax = fig.subplots(1, 3)
    for name in ("ce", "mse"):
        ax[0].plot(tr[name]["ce_of_iterate"], label=f"trained on {name.upper()}")
        ax[1].plot(tr[name]["accuracy"], label=name.upper())
        ax[2].semilogy(tr[name]["grad_norm"], label=name.upper())
    ax[0].set(title="CE of the iterate (common yardstick)", xlabel="GD step")
    ax[1].set(title="training accuracy", xlabel="GD step")
    ax[2].set(title="gradient norm of the objective", xlabel="GD step")
    for a in ax:
        a.legend()
    fig.tight_layout()
    return fig


def spectrum_density(sp: dict) -> Figure:
    """Each model's SLQ density (log scale), with the exact eigenvalues broadened alike where known."""
    fig = Figure(figsize=(5 * len(sp), 3.6))
    axes = fig.subplots(1, len(sp), squeeze=False)
    for ax, (name, r) in zip(axes[0], sp.items()):
        nodes, weights = np.array(r["slq_nodes"]), np.array(r["slq_weights"])
        span = max(nodes.max() - nodes.min(), 1e-6)
        grid = np.linspace(nodes.min() - 0.05 * span, nodes.max() + 0.05 * span, 1000)
        sigma = 0.01 * span
        ax.semilogy(grid, np.maximum(spectral_density(nodes, weights, grid, sigma), 1e-8), label="SLQ density")
        if "exact" in r:
            eig = np.array(r["exact"]["eigenvalues"])
            ones = np.ones((1, eig.size)) / eig.size
            ax.semilogy(grid, np.maximum(spectral_density(eig[None], ones, grid, sigma), 1e-8), "--",
                        label="exact eigenvalues (broadened)")
        ax.set(title=f"{name}: {r['num_params']:,} params, {r['num_images']} images", xlabel="eigenvalue")
        ax.legend()
    fig.tight_layout()
    return fig
