"""`resolve("auto", ...)` offline: one policy, in jaxdl.data, that the studies follow too.

Offline is simulated: an empty cache and a `reachable` that finds no host, so nothing touches the network.
"""

from __future__ import annotations

import json

import pytest

import jaxdl.data as data
from experiments.mnist import main as mnist_main


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "reachable", lambda *args, **kwargs: [])


@pytest.mark.parametrize("dataset, stand_in, real", [("mnist", "digits", True), ("svhn", "synthetic", False)])
def test_offline_auto_is_the_documented_stand_in(offline, dataset, stand_in, real):
    with pytest.warns(UserWarning, match=f"NOT on the real {dataset.upper()}"):
        assert data.resolve("auto", dataset) == stand_in
    assert data.load(stand_in, "test", image_size=28, channels=1, **({} if real else {"n": 20})).real is real


def test_mnist_study_offline_uses_resolve_stand_in(offline, tmp_path):
    with pytest.warns(UserWarning, match="NOT on the real MNIST"):
        metrics = mnist_main(["--epochs", "1", "--out", str(tmp_path / "run")])
    assert metrics["data"].startswith("digits (scikit-learn") and metrics["real_mnist"] is False
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"] == metrics["data"]
