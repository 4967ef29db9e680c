"""tfds sources through `tfds.testing.mock_data` (offline, no TensorFlow)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import jaxdl.data as data
from jaxdl.data import tfds_source

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (the 'tfds' extra) is not installed")


@pytest.mark.parametrize("name, shape", [("svhn_cropped", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_converts_to_dataset(name, shape):
    with tfds.testing.mock_data(num_examples=7):
        ds = data.load(f"tfds:{name}", "test")
    assert ds.images.shape == (7, *shape) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int32 and ds.labels.min() >= 0 and ds.labels.max() <= 9
    assert ds.name == f"tfds:{name}" and ds.real and ds.classes == data.DIGITS  # tfds' label names "0".."9"


def test_tfds_not_prepared_offline_fails_fast(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(tfds_source.HOSTS, "svhn_cropped", f"http://127.0.0.1:{port}/")
    start = time.monotonic()
    with pytest.raises(data.DataUnavailable) as err:
        data.load("tfds:svhn_cropped", "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 15
    assert "\n" not in str(err.value) and "not prepared" in str(err.value) and str(tmp_path) in str(err.value)
