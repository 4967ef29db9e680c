"""The seeds' grid (9 configurations x 3 folds + refit) three ways on the same data and epochs.

    python -m experiments.bench.search [--epochs 30] [--repeat 2] [--units 32,64,128] [--activations relu,tanh,sigmoid]

vmapped jaxdl (one program per width), sequential jaxdl (the same members one by one), both
`jaxdl.search.GridSearch` over the zoo's MLP (`jaxdl.search.zoo("mlp")`, hidden layers 2*units, units), and
scikit-learn's GridSearchCV(MLPClassifier) with the same architecture, optimizer (Adam), batch size, learning
rate and epochs, on scikit-learn's 8x8 digits scaled to [0, 1] and standardised by the training set's mean and
std. Each jaxdl run starts from cleared JAX caches after an untimed warm-up of the model constructors, so both
pay their own compilations and nothing else. Prints a Markdown table with wall and process CPU time (CPU time
is steadier on a shared machine) and the best CV / test accuracy.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier

from experiments.bench import harness
from jaxdl import cli
from jaxdl import data, search
from jaxdl.runtime import use_fast_cpu_flags

MODULE = "experiments.bench.search"
IMAGE_SIZE = 8  # the digits' own size: no resampling
SKLEARN_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic"}
Outcome = tuple[float, float, dict[str, Any]]  # best CV accuracy, test accuracy, best parameters


def run_jaxdl(vmap: bool, grid: dict[str, list], x, y, xt, yt, args: argparse.Namespace) -> Outcome:
    jax.clear_caches()
    build = search.zoo("mlp", in_channels=1, image_size=IMAGE_SIZE)
    for config in search.candidates(grid):  # warm the eager initialisers (not part of either search)
        build(config, nnx.Rngs(0))
    gs = search.GridSearch(build, grid, cv=3, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           vmap=vmap).fit(x, y)
    return float(gs.best_score_), gs.score(xt, yt), gs.best_params_


def run_sklearn(grid: dict[str, list], x, y, xt, yt, args: argparse.Namespace) -> Outcome:
    mlp = MLPClassifier(solver="adam", batch_size=args.batch_size, learning_rate_init=args.lr, alpha=0.0,
                        max_iter=args.epochs, n_iter_no_change=args.epochs + 1, tol=0.0, random_state=0)
    sk_grid = {"hidden_layer_sizes": grid["hidden"],
               "activation": [SKLEARN_ACTIVATIONS[a] for a in grid["activation_fn"]]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gs = GridSearchCV(mlp, sk_grid, cv=3, n_jobs=1).fit(x, y)
    return float(gs.best_score_), gs.score(xt, yt), gs.best_params_


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat standardised train and test rows (the training set's scalar mean and std) and their labels."""
    train, test = (data.load("digits", split, image_size=IMAGE_SIZE, channels=1) for split in ("train", "test"))
    pixels = train.images.astype(np.float32) / 255.0
    mean, std = pixels.mean(), pixels.std()
    x, xt = (((d.images.astype(np.float32) / 255.0 - mean) / std).reshape(len(d.images), -1) for d in (train, test))
    return x, train.labels, xt, test.labels


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--epochs", type=cli.positive_int, default=30)
    p.add_argument("--batch-size", type=cli.positive_int, default=32)
    p.add_argument("--lr", type=cli.positive_float, default=3e-3)
    p.add_argument("--repeat", type=cli.positive_int, default=1)
    p.add_argument("--units", type=harness.positive_ints, default="32,64,128", help="the grid's widths: hidden layers (2*units, units)")
    p.add_argument("--activations", default="relu,tanh,sigmoid", help=f"the grid's, of {', '.join(SKLEARN_ACTIVATIONS)}")
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    activations = args.activations.split(",")
    if unknown := sorted(set(activations) - set(SKLEARN_ACTIVATIONS)):
        p.error(f"activation(s) {', '.join(unknown)} not in both libraries: choose from {', '.join(SKLEARN_ACTIVATIONS)}")
    grid = {"hidden": [(2 * u, u) for u in map(int, args.units.split(","))], "activation_fn": activations}
    header = harness.header(MODULE, argv)

    x, y, xt, yt = digits()
    runs: dict[str, Callable[[], Outcome]] = {
        "jaxdl vmapped": lambda: run_jaxdl(True, grid, x, y, xt, yt, args),
        "jaxdl sequential": lambda: run_jaxdl(False, grid, x, y, xt, yt, args),
        "sklearn GridSearchCV(MLPClassifier)": lambda: run_sklearn(grid, x, y, xt, yt, args),
    }
    results: dict[str, list[harness.Measured[Outcome]]] = {name: [] for name in runs}
    for _ in range(args.repeat):  # interleaved, so a busy spell on the shared machine hits every method
        for name, run in runs.items():
            results[name].append(r := harness.measure(run))
            print(f"{name}: {r.wall_s:.1f} s wall, {r.cpu_s:.1f} s CPU, {r.value}", flush=True)
    configs = len(search.candidates(grid))
    print(f"\n{harness.describe(header['machine'])}\ndigits {len(x)} train / {len(xt)} test; {configs} configs x 3 "
          f"folds + refit, {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}\n")
    harness.print_header("method", "wall s (runs)", "CPU s (runs)", "best CV", "test", "best params")
    for name, rs in results.items():
        best_cv, test, params = rs[-1].value
        harness.print_row(name, " / ".join(f"{r.wall_s:.1f}" for r in rs), " / ".join(f"{r.cpu_s:.1f}" for r in rs),
                          f"{100 * best_cv:.2f}%", f"{100 * test:.2f}%", params)
    if args.json:
        harness.write_json(args.json, header | {"grid": grid, "results": {
            name: [{"wall_s": r.wall_s, "cpu_s": r.cpu_s, "best_cv": r.value[0], "test": r.value[1],
                    "best_params": r.value[2]} for r in rs] for name, rs in results.items()}})


if __name__ == "__main__":
    harness.run(main, MODULE)
