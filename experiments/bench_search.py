"""The seeds' grid (9 configurations x 3 folds + refit) three ways on the same data and epochs.

    python -m experiments.bench_search [--epochs 30] [--repeat 2]

vmapped jaxdl (one program per width), sequential jaxdl (the same members one by one) and scikit-learn's
GridSearchCV(MLPClassifier) with the same architecture (hidden layers 2*units, units), optimizer (Adam), batch
size, learning rate and epochs. Each jaxdl run starts from cleared JAX caches after an untimed warm-up of the
model constructors, so both pay their own compilations and nothing else. Prints a Markdown table with wall and
process CPU time (CPU time is steadier on a shared machine) and the best CV / test accuracy.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier

from experiments import mnist
from jaxdl import search


def run_jaxdl(vmap: bool, x, y, xt, yt, args) -> tuple[float, float, float, float, dict]:
    jax.clear_caches()
    build = mnist.builder("mlp", 8)
    for config in search.candidates(mnist.SEED_GRID):  # warm the eager initialisers (not part of either search)
        search.member(build, config, np.ones(len(x), np.float32), args.lr, 0)
    t, c = time.perf_counter(), time.process_time()
    gs = search.GridSearch(build, mnist.SEED_GRID, cv=3, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, vmap=vmap).fit(x, y)
    return time.perf_counter() - t, time.process_time() - c, gs.best_score_, gs.score(xt, yt), gs.best_params_


def run_sklearn(x, y, xt, yt, args) -> tuple[float, float, float, float, dict]:
    grid = {"hidden_layer_sizes": [(2 * u, u) for u in mnist.SEED_GRID["units"]],
            "activation": ["relu", "tanh", "logistic"]}
    mlp = MLPClassifier(solver="adam", batch_size=args.batch_size, learning_rate_init=args.lr, alpha=0.0,
                        max_iter=args.epochs, n_iter_no_change=args.epochs + 1, tol=0.0, random_state=0)
    t, c = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gs = GridSearchCV(mlp, grid, cv=3, n_jobs=1).fit(x, y)
    return time.perf_counter() - t, time.process_time() - c, gs.best_score_, gs.score(xt, yt), gs.best_params_


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_search", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    _, train, test = mnist.load("digits", "mlp", 0)
    stats = (train.images.mean() / 255.0, train.images.std() / 255.0)
    x, xt = (mnist.preprocess(d.images, "mlp", *stats) for d in (train, test))
    runs = {"jaxdl vmapped": lambda: run_jaxdl(True, x, train.labels, xt, test.labels, args),
            "jaxdl sequential": lambda: run_jaxdl(False, x, train.labels, xt, test.labels, args),
            "sklearn GridSearchCV(MLPClassifier)": lambda: run_sklearn(x, train.labels, xt, test.labels, args)}
    results: dict[str, list] = {name: [] for name in runs}
    for _ in range(args.repeat):  # interleaved, so a busy spell on the shared machine hits every method
        for name, run in runs.items():
            results[name].append(run())
            print(name, results[name][-1], flush=True)
    print(f"\n{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} device(s); digits "
          f"{len(x)} train / {len(xt)} test; 9 configs x 3 folds + refit, {args.epochs} epochs, batch "
          f"{args.batch_size}, Adam lr {args.lr}\n")
    print("| method | wall s (runs) | CPU s (runs) | best CV | test | best params |\n|---|---|---|---|---|---|")
    for name, rs in results.items():
        walls, cpus = (" / ".join(f"{r[i]:.1f}" for r in rs) for i in (0, 1))
        best = rs[-1]
        print(f"| {name} | {walls} | {cpus} | {100 * best[2]:.2f}% | {100 * best[3]:.2f}% | {best[4]} |")


if __name__ == "__main__":
    main()
