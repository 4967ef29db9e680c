"""A small toolkit for generated reports: number formats, markdown tables, and PNG plots of training runs.

Plots are drawn on their own `matplotlib.figure.Figure` and saved with `fig.savefig`: that works headless
without `matplotlib.use("Agg")`, which would switch the backend of an open notebook, and without pyplot's
global state, so nothing is left open or shown. Studies build their own reports from these pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

DPI = 110


def percent(x: float) -> str:
    """A [0, 1] share as a percentage with two decimals, e.g. 0.8933 -> '89.33%'."""
    return f"{100 * x:.2f}%"


def count(n: float) -> str:
    """A large count with an SI prefix, e.g. 11_689_512 -> '11.69 M' (parameters, FLOPs)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are written with str(), so format numbers before."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(histories_by_label: Mapping[str, Sequence[Mapping[str, float]]], file: Path, title: str, *,
                test_accuracy: Mapping[str, float] | None = None) -> None:
    """Training loss and accuracy per epoch of `Trainer.fit` histories, one line per label; validation loss and
    accuracy, where the history has them, dotted in the same colour; a label's final test accuracy, when given,
    is a dashed line in its colour."""
    fig = Figure(figsize=(10, 4), layout="tight")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for label, history in histories_by_label.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=label)
        ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o", label=f"{label} train")
        if all("val_loss" in h for h in history):
            colour = ax_acc.lines[-1].get_color()
            ax_loss.plot(epochs, [h["val_loss"] for h in history], linestyle=":", marker=".", color=colour,
                         label=f"{label} val")
            ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history], linestyle=":", marker=".", color=colour,
                        label=f"{label} val")
        if test_accuracy and label in test_accuracy:
            ax_acc.axhline(100 * test_accuracy[label], linestyle="--", linewidth=1,
                           color=ax_acc.lines[-1].get_color(), label=f"{label} test")
    ax_loss.set(xlabel="epoch", ylabel="loss (cross-entropy)", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)",
               title="Accuracy" + (" (test: dashed)" if test_accuracy else ""))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title, fontsize=9)
    fig.savefig(file, dpi=DPI)


def plot_matrix(values: np.ndarray, text: Sequence[Sequence[str]], file: Path, *, rows: Sequence[str],
                cols: Sequence[str], title: str, xlabel: str = "", ylabel: str = "", colorbar: str = "",
                cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
                figsize: tuple[float, float] = (5.5, 5), fontsize: float = 10) -> None:
    """A colour-coded matrix with `text` written in each cell (white on dark cells, black on light ones):
    confusion matrices, grid-search scores."""
    values = np.asarray(values, dtype=float)
    fig = Figure(figsize=figsize, layout="tight")
    ax = fig.subplots()
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
    norm = Normalize(*image.get_clim())
    for (i, j), v in np.ndenumerate(values):
        r, g, b, _ = image.cmap(norm(v))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(j, i, text[i][j], ha="center", va="center", fontsize=fontsize, color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, label=colorbar)
    fig.savefig(file, dpi=DPI)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], title: str, file: Path, *,
                   noun: str = "class") -> None:
    """Counts of (true row, predicted column), coloured by the share of the true class, so rare classes'
    errors show as clearly as common ones'."""
    cm = np.asarray(confusion)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    plot_matrix(rates, [[str(n) for n in row] for row in cm], file, rows=class_names, cols=class_names,
                title=title, xlabel=f"predicted {noun}", ylabel=f"true {noun}", colorbar="share of the true class",
                cmap="Blues", vmin=0, vmax=1, fontsize=7)
