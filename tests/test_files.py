"""jaxdl.files: one cache root for data and weights, one bounded network probe, one file hash.

Nothing here touches the internet: the network is a socket module whose lookups hang.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from jaxdl import files


def hang(*args, **kwargs):
    """A DNS lookup (or connect) that hangs far past any deadline, as on a machine with a black-holed resolver."""
    time.sleep(60)
    raise OSError("timed out")


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_digest_matches_hashlib_across_chunks(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom((1 << 20) * 2 + 123))  # spans three 1 MiB chunks
    assert files.digest(path, algorithm) == hashlib.new(algorithm, path.read_bytes()).hexdigest()
    assert files.digest(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_probe_tells_open_from_closed_ports_quickly() -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        live = f"http://127.0.0.1:{listening.getsockname()[1]}/x.pth"
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/x.pth"
        start = time.monotonic()
        assert files.reachable([dead, live, dead], timeout=2.0) == [live]
        assert time.monotonic() - start < 2


def test_probe_is_bounded_even_if_dns_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert files.reachable(["http://example.invalid/", "https://example.invalid:8443/x"], timeout=0.3) == []
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("setting", ["", "~/x"])
def test_data_and_weights_share_one_absolute_expanded_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           setting: str) -> None:
    """An empty JAXDL_DATA means the default, and `~` is the home folder, for data and weights alike."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    import convert
    import jaxdl.data as data
    from jaxdl.data import mnist, svhn

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("JAXDL_DATA", setting)
    monkeypatch.chdir(cwd)  # a relative path would land here
    root = home / ".cache" / "jaxdl" if setting == "" else home / "x"

    assert files.cache_dir() == data.cache_dir() == root and root.is_absolute()
    assert svhn.directory(None) == root / "svhn" and mnist.directory(None) == root / "mnist"

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), hub / "checkpoints" / "resnet18-f37072fd.pth")
    convert.pretrained("resnet18", 10)
    assert (root / "weights" / "resnet18-IMAGENET1K_V1.safetensors").is_file()
    assert not any(cwd.iterdir())


def test_pretrained_offline_fails_fast_even_if_dns_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`convert.pretrained` with nothing cached and a resolver that never answers: one line, well within 15 s."""
    torch = pytest.importorskip("torch")
    import convert

    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "jaxdl"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    with pytest.raises(convert.WeightsUnavailable) as err:
        convert.pretrained("resnet18", 10)
    assert time.monotonic() - start < 15
    assert "\n" not in str(err.value) and str(tmp_path / "hub" / "checkpoints") in str(err.value)
