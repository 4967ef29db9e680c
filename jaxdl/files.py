"""The one cache directory, network probe and file hash shared by data sets and pretrained weights.

Data (`jaxdl.data`) and weights (`convert.hub`) once had a copy each, and the copies drifted: an empty
`JAXDL_DATA` sent weights to a relative `./weights`, and a `~` in it was expanded for data but not for
weights. Everything that caches, probes or checks a file goes through here.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 3.0
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """`$JAXDL_DATA` if set and non-empty, else `~/.cache/jaxdl`, `~` expanded and absolute.

    Absolute so that a path computed here names the same file after a `chdir`; data sets live in
    subfolders of it (`svhn/`, `mnist/`, `synthetic/`), converted weights in `weights/`.
    """
    return Path(os.environ.get("JAXDL_DATA") or Path.home() / ".cache" / "jaxdl").expanduser().absolute()


def digest(path: str | Path, algorithm: Literal["sha256", "md5"] = "sha256") -> str:
    """Hex digest of the file at `path`, read in 1 MiB chunks (weights and data sets run to hundreds of MB)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _connects(host: str, port: int, timeout: float, ok: list[bool]) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            ok.append(True)
    except OSError:
        pass


def reachable(urls: list[str], timeout: float = PROBE_TIMEOUT_S) -> list[str]:
    """The subset of `urls` whose host accepts a TCP connection within `timeout` seconds.

    The probes run in daemon threads joined against one deadline, because
    `socket.create_connection`'s timeout does not cover a hanging DNS lookup: offline, a
    missing file must cost seconds, not the minutes a resolver may take to give up.
    """
    results: list[list[bool]] = [[] for _ in urls]
    threads = []
    for url, ok in zip(urls, results, strict=True):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        t = threading.Thread(target=_connects, args=(parts.hostname, port, timeout, ok), name="jaxdl-probe", daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [url for url, ok in zip(urls, results, strict=True) if ok]
