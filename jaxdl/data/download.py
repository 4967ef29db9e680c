"""Cache directory, md5 checks and a download that fails fast when offline.

Generic downloaders (tfds, torchvision) retry for minutes when the host cannot be
reached; on the project's offline machines that turns a missing file into a three-minute
hang. Here reachability is checked first with a short, bounded probe, so a missing data
set costs seconds and ends in one line that says which files to put where.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from .dataset import DataCorrupt, DataUnavailable

PROBE_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0


def cache_dir() -> Path:
    """`$JAXDL_DATA`, else `~/.cache/jaxdl`: one root for downloads and generated arrays."""
    return Path(os.environ.get("JAXDL_DATA") or Path.home() / ".cache" / "jaxdl").expanduser()


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _connects(host: str, port: int, ok: list[bool]) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            ok.append(True)
    except OSError:
        pass


def reachable(urls: list[str], timeout: float = PROBE_TIMEOUT_S) -> list[str]:
    """The subset of `urls` whose host accepts a TCP connection within `timeout` seconds.

    The probes run in daemon threads joined against one deadline, because
    `socket.create_connection`'s timeout does not cover a hanging DNS lookup.
    """
    results: list[list[bool]] = [[] for _ in urls]
    threads = []
    for url, ok in zip(urls, results, strict=True):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        t = threading.Thread(target=_connects, args=(parts.hostname, port, ok), daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [url for url, ok in zip(urls, results, strict=True) if ok]


def verify(path: Path, md5: str, hint: str) -> None:
    """Raise DataCorrupt (one line) if `path` is not the file with checksum `md5`."""
    got = md5sum(path)
    if got != md5:
        raise DataCorrupt(f"{path} has md5 {got}, expected {md5} (corrupt, truncated or not the official file): {hint}")


def _download(url: str, dest: Path) -> None:
    """Stream `url` into `dest` through a `.part` file so a broken transfer never looks complete."""
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as response, open(part, "wb") as out:
        size = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {dest.name}", leave=False) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    os.replace(part, dest)


def ensure_files(
    files: dict[str, str], mirrors: list[str], directory: Path, *, download: bool, what: str
) -> dict[str, Path]:
    """Paths of `files` (name -> md5) in `directory`, downloading missing ones from `mirrors`.

    Present files are always md5-checked: a half-copied 180 MB .mat otherwise fails much
    later with an opaque scipy error. Downloads go through the first reachable mirror.
    """
    paths = {name: directory / name for name in files}
    missing = [name for name, path in paths.items() if not path.is_file()]
    hint = f"delete it and rerun to download it again, or copy the official file from {mirrors[0]}"
    if missing:
        where = f"put {', '.join(missing)} (from {mirrors[0]}) into {directory}"
        if not download:
            raise DataUnavailable(f"{what}: {', '.join(missing)} not found and download=False: {where}")
        live = reachable(mirrors)
        if not live:
            hosts = ", ".join(urlsplit(m).hostname or m for m in mirrors)
            raise DataUnavailable(f"{what}: offline ({hosts} unreachable): {where}")
        directory.mkdir(parents=True, exist_ok=True)
        for name in missing:
            errors = []
            for mirror in live:
                try:
                    _download(mirror + name, paths[name])
                    break
                except OSError as e:
                    errors.append(f"{mirror + name}: {e}")
            else:
                raise DataUnavailable(f"{what}: download failed ({'; '.join(errors)}): {where}")
    for name, path in paths.items():
        verify(path, files[name], hint)
    return paths
