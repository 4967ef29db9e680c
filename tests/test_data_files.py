"""File-backed sources (SVHN .mat, MNIST IDX): layout, checksums, corruption, offline failure.

Nothing here touches the internet: "offline" is a closed port on 127.0.0.1, and the
download path is exercised against a local HTTP server.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import socket
import struct
import threading
import time
import warnings

import numpy as np
import pytest
import scipy.io

import jaxdl.data as data
from jaxdl import files
from jaxdl.data import download, mnist, svhn


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))


@pytest.fixture
def closed_url() -> str:
    """A URL whose port nothing listens on: connection refused, deterministically."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/files/"


def write_svhn_mat(path, n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A .mat in SVHN's exact layout: X (32, 32, 3, N) uint8, y (N, 1) with 10 meaning digit 0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, includes 10
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def use_file(monkeypatch, module, split: str, path) -> None:
    monkeypatch.setitem(module.FILES, split, (path.name, files.digest(path, "md5")))


def test_svhn_layout_and_label_10_is_zero(tmp_path, monkeypatch):
    x, y = write_svhn_mat(tmp_path / "train_32x32.mat")
    use_file(monkeypatch, svhn, "train", tmp_path / "train_32x32.mat")
    ds = data.load("svhn", "train", data_dir=str(tmp_path), download=False)
    assert ds.images.shape == (12, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int32 and ds.name == "svhn" and ds.real
    np.testing.assert_array_equal(ds.images[5], x[:, :, :, 5])
    np.testing.assert_array_equal(ds.labels, y[:, 0] % 10)
    assert ds.labels[9] == 0  # the file said 10


def test_svhn_md5_mismatch_is_one_clear_line(tmp_path, monkeypatch):
    write_svhn_mat(tmp_path / "test_32x32.mat")
    monkeypatch.setitem(svhn.FILES, "test", ("test_32x32.mat", "0" * 32))
    with pytest.raises(data.DataCorrupt) as err:
        data.load("svhn", "test", data_dir=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "test_32x32.mat" in msg and "md5" in msg and "delete it" in msg


def test_truncated_mat_is_one_clear_line(tmp_path, monkeypatch):
    path = tmp_path / "train_32x32.mat"
    write_svhn_mat(path, n=40)
    path.write_bytes(path.read_bytes()[:2000])
    use_file(monkeypatch, svhn, "train", path)  # md5 of the damaged file: only the parser can notice
    with pytest.raises(data.DataCorrupt) as err:
        data.load("svhn", "train", data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_offline_fails_fast_with_one_line(tmp_path, monkeypatch, closed_url):
    monkeypatch.setattr(svhn, "MIRRORS", [closed_url])
    start = time.monotonic()
    with pytest.raises(data.DataUnavailable) as err:
        data.load("svhn", "train", data_dir=str(tmp_path / "empty"))
    assert time.monotonic() - start < 15
    msg = str(err.value)
    assert "\n" not in msg and "train_32x32.mat" in msg and str(tmp_path / "empty") in msg
    assert isinstance(err.value, RuntimeError)


def test_download_false_never_probes(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "reachable", lambda *a, **k: pytest.fail("probed the network"))
    with pytest.raises(data.DataUnavailable, match="download=False"):
        data.load("mnist", "test", data_dir=str(tmp_path), download=False)


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(directory, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", images)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", labels)
    return images, labels


def use_mnist_test_files(monkeypatch, directory) -> None:
    names = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    monkeypatch.setitem(mnist.FILES, "test", tuple((n, files.digest(directory / n, "md5")) for n in names))


def test_mnist_idx(tmp_path, monkeypatch):
    images, labels = write_mnist(tmp_path)
    use_mnist_test_files(monkeypatch, tmp_path)
    ds = data.load("mnist", "test", data_dir=str(tmp_path), download=False)
    assert ds.images.shape == (15, 28, 28, 1) and ds.images.dtype == np.uint8 and ds.name == "mnist"
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_mnist_truncated_gz(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    use_mnist_test_files(monkeypatch, tmp_path)
    with pytest.raises(data.DataCorrupt) as err:
        data.load("mnist", "test", data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and path.name in str(err.value)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_download_uses_first_reachable_mirror_and_checks_md5(tmp_path, monkeypatch, closed_url):
    served = tmp_path / "served"
    served.mkdir()
    write_mnist(served)
    use_mnist_test_files(monkeypatch, served)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(mnist, "MIRRORS", [closed_url, f"http://127.0.0.1:{server.server_port}/"])
        ds = data.load("mnist", "test")  # into $JAXDL_DATA/mnist
        assert len(ds) == 15
        assert (data.cache_dir() / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
        assert not list((data.cache_dir() / "mnist").glob("*.part"))
    finally:
        server.shutdown()
        server.server_close()


def test_resolve_auto(tmp_path, monkeypatch, closed_url):
    monkeypatch.setattr(svhn, "MIRRORS", [closed_url])
    with pytest.warns(UserWarning, match="NOT on the real SVHN"):
        assert data.resolve("auto", "svhn", data_dir=str(tmp_path)) == "synthetic"
    for split in ("train", "test"):
        (tmp_path / svhn.FILES[split][0]).write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.resolve("auto", "svhn", data_dir=str(tmp_path)) == "svhn"
    assert data.resolve("digits") == "digits"
    with pytest.raises(ValueError):
        data.resolve("svnh")
