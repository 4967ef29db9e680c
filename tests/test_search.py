"""The vmapped grid search: GridSearchCV's splits and result format, vmapped == sequential, clear errors.

Tiny data (scikit-learn's digits, 8x8, a few hundred samples) and 1-2 epochs keep each test a few seconds.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neural_network import MLPClassifier

from jaxdl import search, weights


# Two widths (two programs); activation and lr vary inside the first, so they are vmapped together.
GRID = [{"hidden": [(8,)], "activation_fn": ["relu", "tanh"], "lr": [1e-3, 3e-3]},
        {"hidden": [(16,)], "activation_fn": ["relu"]}]
BUILD = search.zoo("mlp", image_size=8)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x[:300] / 16.0).astype(np.float32), y[:300].astype(np.int32)


def _search(vmap: bool, grid=GRID, epochs: int = 1) -> search.GridSearch:
    return search.GridSearch(BUILD, grid, cv=3, epochs=epochs, batch_size=32, vmap=vmap)


@pytest.fixture(scope="session")
def searches(digits):
    return _search(True).fit(*digits), _search(False).fit(*digits)


def test_folds_are_stratified_disjoint_and_sklearns(digits):
    _, y = digits
    splits = search.folds(y, 3)
    tests = np.concatenate([test for _, test in splits])
    assert np.array_equal(np.sort(tests), np.arange(len(y)))  # disjoint test folds covering everything
    for (train, test), (sk_train, sk_test) in zip(splits, StratifiedKFold(3).split(np.zeros(len(y)), y)):
        assert np.array_equal(train, sk_train) and np.array_equal(test, sk_test)
        assert not set(train) & set(test)
        share = np.bincount(y[test], minlength=10) / np.bincount(y, minlength=10)
        assert np.all(np.abs(share - 1 / 3) < 0.1)  # every class split evenly


def test_vmapped_search_equals_sequential(searches):
    vmapped, sequential = searches
    assert len(vmapped.groups_) == 2  # one program per width; activation and lr vmapped inside it
    for k in range(3):
        np.testing.assert_allclose(vmapped.cv_results_[f"split{k}_test_score"],
                                   sequential.cv_results_[f"split{k}_test_score"], atol=1 / 100)
    assert vmapped.best_params_ == sequential.best_params_
    a, b = (jax.tree.leaves(s.best_estimator_) for s in searches)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-4)


def test_cv_results_match_gridsearchcv(searches, digits):
    x, y = digits
    ours = searches[0].cv_results_
    sk_grid = [{"hidden_layer_sizes": [(8,)], "activation": ["relu", "tanh"], "learning_rate_init": [1e-3, 3e-3]},
               {"hidden_layer_sizes": [(16,)], "activation": ["relu"]}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = GridSearchCV(MLPClassifier(max_iter=2), sk_grid, cv=3).fit(x, y).cv_results_
    rename = lambda k: (k.replace("hidden_layer_sizes", "hidden").replace("learning_rate_init", "lr")  # noqa: E731
                        .replace("activation", "activation_fn"))
    assert set(ours) == {rename(k) for k in theirs}
    for key, value in theirs.items():
        assert len(ours[rename(key)]) == len(value) == 5
        assert type(ours[rename(key)]) is type(value)
        if isinstance(value, np.ma.MaskedArray):  # lr is absent from the second grid: masked, as in sklearn
            assert np.array_equal(np.ma.getmaskarray(ours[rename(key)]), np.ma.getmaskarray(value))
    assert ours["rank_test_score"].dtype == theirs["rank_test_score"].dtype
    best = searches[0]
    assert best.best_params_ == ours["params"][best.best_index_]
    assert best.best_score_ == ours["mean_test_score"].max() == ours["mean_test_score"][best.best_index_]
    assert ours["rank_test_score"][best.best_index_] == 1


def test_refit_trains_on_all_training_data(digits):
    x, y = digits
    gs = _search(True, grid={"hidden": [(8,)], "activation_fn": ["relu"]}, epochs=1).fit(x, y)
    batches = search.schedule(len(x), 32, 1, 0)
    everything = search.fit(BUILD, gs.best_params_, x, y, batches)
    for refit, full in zip(jax.tree.leaves(gs.best_estimator_), jax.tree.leaves(everything)):
        np.testing.assert_allclose(refit, full, atol=1e-6)
    # and the comparison is sensitive: relabelling 10 of the 300 samples changes the trained weights.
    changed = search.fit(BUILD, gs.best_params_, x, np.where(np.arange(len(y)) < 290, y, 0), batches)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(gs.best_estimator_),
                                                     jax.tree.leaves(changed)))
    assert 0.0 <= gs.score(x, y) <= 1.0


def test_best_estimator_can_be_saved_and_reloaded(searches, digits, tmp_path):
    """The refit model knows its spec (it was built by a builder, not by `create`), so it saves and reloads."""
    best = searches[0].best_estimator_
    weights.save(best, tmp_path / "best.safetensors")
    again = weights.load(tmp_path / "best.safetensors")
    x, _ = digits
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(best(x)))


@pytest.mark.parametrize("grid, cv, message", [
    ({"hidden": [(8,)], "activation_fn": ["swish"]}, 3, "cannot build grid point"),
    ({"lr": [0.0]}, 3, "lr must be a positive number, got 0.0"),
    ({}, 3, "empty parameter grid"),
    ({"hidden": []}, 3, "non-empty"),
    ({"depth": [2]}, 3, "mlp takes no option depth"),
    ({"hidden": [(8,)]}, 40, "folds=40 > "),
    ({"hidden": [(8,)]}, 1, "folds must be an integer >= 2"),
])
def test_bad_grid_values_give_one_line_errors(digits, grid, cv, message):
    x, y = digits
    with pytest.raises(ValueError) as err:
        search.GridSearch(BUILD, grid, cv=cv, epochs=1).fit(x, y)
    assert message in str(err.value) and "\n" not in str(err.value)
