"""Grid search with stratified k-fold cross-validation, the folds of a configuration trained at once.

A GridSearchCV over a small network is dozens of tiny, identical trainings, each too small to keep the
machine busy. Here every member of the search -- one (configuration, fold) pair -- trains with the library's own
pure step (`jaxdl.train.train_step`) on (graphdef, state, batch with per-sample weights), so `jax.vmap` runs all
of them in one compiled program:

* Folds differ only by their training mask. Every member walks the SAME batches of the whole training set;
  a sample outside the fold's training part gets weight 0 in the loss (the batch's "weight"). Shapes stay static and the batches of
  all members are one gather.
* Configurations that differ in the learning rate differ only in optimizer state (`optax.inject_hyperparams`
  keeps it there), so they stack too.
* Configurations with another activation have another graphdef (the function is static in NNX). Members
  with equal parameter SHAPES share one jitted program in which each graphdef is its own vmapped sub-batch
  (grouping by activation costs no extra FLOPs; a `lax.switch` on a batched index computes every branch).
* Different shapes (another width) cannot share a program without padding, which measured slower on CPU,
  so each shape group is its own program, run one after the other.

`vmap=False` trains the very same members one at a time with the very same batches: the sequential baseline
the vmapped run must equal. Results follow scikit-learn's GridSearchCV (`cv_results_`, `best_params_`,
`best_score_`, `best_index_`), using its `ParameterGrid` and `StratifiedKFold` so the splits are identical.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy.stats import rankdata
from sklearn.model_selection import ParameterGrid, StratifiedKFold

from jaxdl.train.config import TrainConfig
from jaxdl.train.optim import optimizer
from jaxdl.train.step import State, split, train_step

Config = dict[str, Any]
Builder = Callable[[Config, nnx.Rngs], nnx.Module]
Grid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]]

# Grid keys the search consumes itself (the optimizer's); every other key goes to the builder.
TRAIN_KEYS = ("lr",)


class Member(NamedTuple):
    """One training run: a configuration on one fold (or on everything, for the refit)."""

    graphdef: nnx.GraphDef
    state: State  # jaxdl.train's carried state: params, rest (e.g. a `Choice` index, held constant), opt
    mask: np.ndarray | None  # (n,) float32: 1 where the sample belongs to this member's training part


def zoo(arch: str, num_classes: int = 10, **fixed: Any) -> Builder:
    """A builder for a `jaxdl.models` architecture: a grid point's keys (but `TRAIN_KEYS`) are its options, on
    top of `fixed`; e.g. `zoo("mlp", image_size=8)` with the grid {"hidden": [(32,), (64, 32)]}."""
    from jaxdl import models

    def build(config: Config, rngs: nnx.Rngs) -> nnx.Module:
        try:
            return models.create(arch, num_classes, rngs=rngs, **{**fixed, **config})
        except TypeError as err:
            raise ValueError(str(err)) from None

    return build


def train_config(epochs: int, batch_size: int, lr: float, seed: int) -> TrainConfig:
    """The search's training: Adam at a constant rate (torch.optim.Adam's defaults, GridSearchCV's MLP solver),
    through the library's optimizer factory, so a grid point's `lr` is a value in its optimizer state."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=lr, weight_decay=0.0,
                       schedule="constant", seed=seed)


# ---------------------------------------------------------------------------------------------- validation


def candidates(param_grid: Grid) -> list[Config]:
    """The grid's points in GridSearchCV's order, refusing the values the search would choke on later."""
    if not param_grid:
        raise ValueError("empty parameter grid: give at least one parameter with at least one value")
    configs = list(ParameterGrid(param_grid))  # raises its own one-line error for an empty value list
    for config in configs:
        lr = config.get("lr", 1.0)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
    return configs


def folds(y: np.ndarray, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GridSearchCV's splits for a classifier (`StratifiedKFold(n_splits)`, unshuffled), checked first.

    scikit-learn only warns when a class has fewer members than folds and then yields folds without that
    class; a search would silently compare configurations on uneven folds, so refuse instead.
    """
    if not isinstance(n_splits, int) or n_splits < 2:
        raise ValueError(f"folds must be an integer >= 2, got {n_splits!r}")
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < n_splits:
        raise ValueError(f"folds={n_splits} > {counts.min()} samples of class {classes[counts.argmin()]!r}, "
                         f"the smallest class: use at most {counts.min()} folds")
    return list(StratifiedKFold(n_splits).split(np.zeros(len(y)), y))


# ----------------------------------------------------------------------------- the library's step, vmapped


def _epoch(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, state: State, mask: jax.Array, x: jax.Array,
           y: jax.Array, batches: jax.Array) -> State:
    """One epoch of ONE member over `batches` (steps, batch) of sample indices, -1 marking padding: jaxdl.train's
    step, with the member's fold as the per-sample weight of every batch."""

    def body(state, idx):
        weight = jnp.where(idx >= 0, mask[idx], 0.0)
        state, _ = train_step(graphdef, state, {"image": x[idx], "label": y[idx], "weight": weight}, tx=tx)
        return state, None

    return jax.lax.scan(body, state, batches)[0]


def _logits(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, params, rest)(x)


_epoch_one = jax.jit(_epoch, static_argnums=(0, 1))
_predict_one = jax.jit(lambda g, p, r, x: jnp.argmax(_logits(g, p, r, x), -1), static_argnums=0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _epoch_many(graphdefs: tuple, tx, states: tuple, masks: tuple, x, y, batches) -> tuple:
    """`_epoch` for every member of a shape group in one program: one vmapped sub-batch per graphdef."""
    return tuple(jax.vmap(functools.partial(_epoch, g, tx), in_axes=(0, 0, None, None, None))(s, m, x, y, batches)
                 for g, s, m in zip(graphdefs, states, masks))


@functools.partial(jax.jit, static_argnums=0)
def _predict_many(graphdefs: tuple, params: tuple, rests: tuple, x: jax.Array) -> tuple:
    return tuple(jnp.argmax(jax.vmap(functools.partial(_logits, g), in_axes=(0, 0, None))(p, r, x), -1)
                 for g, p, r in zip(graphdefs, params, rests))


# ------------------------------------------------------------------------------------------------ runners


def schedule(n: int, batch_size: int, epochs: int, seed: int) -> np.ndarray:
    """(epochs, steps, batch_size) sample indices: a fresh permutation per epoch, the tail padded with -1.

    Shared by every member, so the vmapped and the sequential run see identical batches."""
    rng = np.random.default_rng(seed)
    steps = -(-n // batch_size)
    out = np.full((epochs, steps * batch_size), -1, np.int32)
    for epoch in range(epochs):
        out[epoch, :n] = rng.permutation(n)
    return out.reshape(epochs, steps, batch_size)


def _stack(trees: Sequence[Any]) -> Any:
    """Stack on the host: eager `jnp.stack` compiles one tiny program per leaf shape, seconds on a busy CPU."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def _by_graphdef(graphdefs: Sequence[nnx.GraphDef]) -> list[list[int]]:
    """Indices of equal graphdefs (same activation), in first-seen order: the vmapped sub-batches."""
    order: dict[nnx.GraphDef, list[int]] = {}
    for i, graphdef in enumerate(graphdefs):
        order.setdefault(graphdef, []).append(i)
    return list(order.values())


def _chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    """Equal-sized chunks (the last zero-padded), so prediction compiles once."""
    size = min(size, len(x))
    padded = np.concatenate([x, np.zeros((-len(x) % size, *x.shape[1:]), x.dtype)])
    return np.split(padded, len(padded) // size)


def train(members: Sequence[Member], x: jax.Array, y: jax.Array, batches: np.ndarray,
          tx: optax.GradientTransformation, vmapped: bool) -> list[State]:
    """Train `members` (all of one parameter shape when vmapped) and return their final states."""
    if not vmapped:
        trained = []
        for m in members:
            state = m.state
            for epoch_batches in batches:
                state = _epoch_one(m.graphdef, tx, state, jnp.asarray(m.mask), x, y, jnp.asarray(epoch_batches))
            trained.append(state)
        return jax.block_until_ready(trained)
    subs = _by_graphdef([m.graphdef for m in members])
    graphdefs = tuple(members[s[0]].graphdef for s in subs)
    states = tuple(_stack([members[i].state for i in s]) for s in subs)
    masks = tuple(jnp.asarray(np.stack([members[i].mask for i in s])) for s in subs)
    for epoch_batches in batches:
        states = _epoch_many(graphdefs, tx, states, masks, x, y, jnp.asarray(epoch_batches))
    trained: list = [None] * len(members)
    for s, stacked in zip(subs, jax.device_get(states)):
        for j, i in enumerate(s):
            trained[i] = jax.tree.map(lambda leaf: leaf[j], stacked)
    return trained


def predict(members: Sequence[Member], x: np.ndarray, vmapped: bool, chunk: int = 4096) -> np.ndarray:
    """(members, n) predicted labels of every member on all of `x`."""
    n = len(x)
    if not vmapped:
        return np.stack([np.concatenate([np.asarray(_predict_one(m.graphdef, m.state["params"], m.state["rest"], c))
                                         for c in _chunks(x, chunk)])[:n] for m in members])
    subs = _by_graphdef([m.graphdef for m in members])
    graphdefs = tuple(members[s[0]].graphdef for s in subs)
    params = tuple(_stack([members[i].state["params"] for i in s]) for s in subs)
    rests = tuple(_stack([members[i].state["rest"] for i in s]) for s in subs)
    parts = [_predict_many(graphdefs, params, rests, c) for c in _chunks(x, chunk)]
    out = np.empty((len(members), n), np.int32)
    for k, s in enumerate(subs):
        out[s] = np.concatenate([np.asarray(p[k]) for p in parts], axis=1)[:, :n]
    return out


# ----------------------------------------------------------------------------------------------- the search


def member(build: Builder, config: Config, mask: np.ndarray, tx: optax.GradientTransformation, seed: int) -> Member:
    """Build `config`'s model from `seed` (the same for every fold, like a fixed random_state)."""
    arch = {k: v for k, v in config.items() if k not in TRAIN_KEYS}
    try:
        model = build(arch, nnx.Rngs(seed))
    except (ValueError, TypeError) as err:
        raise ValueError(f"cannot build grid point {config}: {err}") from None
    if jax.tree.leaves(nnx.state(model, nnx.Any(nnx.BatchStat, nnx.RngState))):
        raise ValueError("the search holds non-parameter state constant: models with BatchNorm statistics or "
                         "dropout RNGs are not supported")
    graphs, state = split(model, tx)
    if "lr" in config:  # a constant rate is a value in the optimizer state: per member, in one program
        rates = state["opt"].hyperparams
        rates["learning_rate"] = jnp.asarray(config["lr"], rates["learning_rate"].dtype)
    return Member(graphs.train, state, mask)


def fit(build: Builder, config: Config, x: jax.Array, y: jax.Array, batches: np.ndarray, lr: float = 1e-3,
        seed: int = 0) -> nnx.Module:
    """Train one configuration on ALL of (x, y): the refit, and a plain training run without a search."""
    epochs, steps, batch_size = batches.shape
    tx = optimizer(train_config(epochs, batch_size, lr, seed), steps)
    m = member(build, config, np.ones(len(x), np.float32), tx, seed)
    (state,) = train([m], jnp.asarray(x), jnp.asarray(y, jnp.int32), batches, tx, vmapped=False)
    return nnx.merge(m.graphdef, state["params"], state["rest"])



class GridSearch:
    """GridSearchCV for NNX models: exhaustive grid, stratified k-fold CV, refit of the best on everything.

    `build(config, rngs)` makes the model for a grid point (all keys but `TRAIN_KEYS`); it should raise
    ValueError for values it cannot build. Every configuration starts from the same seed on every fold,
    as a GridSearchCV estimator with a fixed random_state does.
    """

    def __init__(self, build: Builder, param_grid: Grid, *, cv: int = 3, epochs: int = 10, batch_size: int = 64,
                 lr: float = 1e-3, seed: int = 0, vmap: bool = True, log: Callable[[str], None] | None = None):
        self.build, self.param_grid, self.cv, self.epochs = build, param_grid, cv, epochs
        self.batch_size, self.lr, self.seed, self.vmap, self.log = batch_size, lr, seed, vmap, log or (lambda _: None)

    def fit(self, x: np.ndarray, y: np.ndarray) -> GridSearch:
        configs = candidates(self.param_grid)
        splits = folds(np.asarray(y), self.cv)
        masks = np.zeros((len(splits), len(x)), np.float32)
        for k, (train_idx, _) in enumerate(splits):
            masks[k, train_idx] = 1.0
        batches = schedule(len(x), self.batch_size, self.epochs, self.seed)
        # updates read each member's own lr from its state
        self.tx_ = optimizer(train_config(self.epochs, self.batch_size, self.lr, self.seed), batches.shape[1])
        # One init per configuration: every fold starts from it, as with a fixed random_state.
        inits = [member(self.build, c, masks[0], self.tx_, self.seed) for c in configs]
        members = [m._replace(mask=masks[k]) for m in inits for k in range(len(splits))]
        xd, yd = jnp.asarray(x), jnp.asarray(y, jnp.int32)

        shapes: dict[Any, list[int]] = {}
        for i, m in enumerate(members):
            leaves, treedef = jax.tree.flatten(m.state["params"])
            shapes.setdefault((treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves)), []).append(i)
        self.groups_ = [sorted({i // len(splits) for i in g}) for g in shapes.values()]

        scores = np.zeros(len(members))
        fit_time, score_time = np.zeros(len(members)), np.zeros(len(members))
        # Vmapped: a shape group per program. Sequential: members one by one, each timed alone.
        for group in shapes.values() if self.vmap else [[i] for i in range(len(members))]:
            t0 = time.perf_counter()
            states = train([members[i] for i in group], xd, yd, batches, self.tx_, self.vmap)
            t1 = time.perf_counter()
            preds = predict([members[i]._replace(state=st) for i, st in zip(group, states)], x, self.vmap)
            t2 = time.perf_counter()
            for i, pred in zip(group, preds):
                test_idx = splits[i % len(splits)][1]
                scores[i] = np.mean(pred[test_idx] == np.asarray(y)[test_idx])
            fit_time[group], score_time[group] = (t1 - t0) / len(group), (t2 - t1) / len(group)
            self.log(f"trained {len(group)} member(s) in {t1 - t0:.1f} s")

        shape = (len(configs), len(splits))
        self.cv_results_ = cv_results(configs, scores.reshape(shape), fit_time.reshape(shape),
                                      score_time.reshape(shape))
        self.best_index_ = int(np.argmin(self.cv_results_["rank_test_score"]))
        self.best_params_ = configs[self.best_index_]
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])

        t0 = time.perf_counter()
        self.best_estimator_ = fit(self.build, self.best_params_, xd, yd, batches, self.lr, self.seed)
        self.refit_time_ = time.perf_counter() - t0
        self.log(f"best {self.best_params_}: CV {self.best_score_:.4f}; refit in {self.refit_time_:.1f} s")
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        graphdef, params, rest = nnx.split(self.best_estimator_, nnx.Param, ...)
        return predict([Member(graphdef, {"params": params, "rest": rest}, None)], x, vmapped=False)[0]

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))


def cv_results(configs: Sequence[Config], scores: np.ndarray, fit_time: np.ndarray,
               score_time: np.ndarray) -> dict[str, Any]:
    """GridSearchCV's `cv_results_` from (candidates, splits) arrays: same keys, dtypes and ranking rule."""
    results: dict[str, Any] = {
        "mean_fit_time": fit_time.mean(1), "std_fit_time": fit_time.std(1),
        "mean_score_time": score_time.mean(1), "std_score_time": score_time.std(1),
    }
    for name in sorted({k for c in configs for k in c}):
        column = np.ma.MaskedArray(np.empty(len(configs), object), mask=True)
        for i, c in enumerate(configs):
            if name in c:
                column[i] = c[name]
        results[f"param_{name}"] = column
    results["params"] = list(configs)
    for k in range(scores.shape[1]):
        results[f"split{k}_test_score"] = scores[:, k]
    results["mean_test_score"] = scores.mean(1)
    results["std_test_score"] = scores.std(1)
    results["rank_test_score"] = rankdata(-results["mean_test_score"], method="min").astype(np.int32)
    return results
