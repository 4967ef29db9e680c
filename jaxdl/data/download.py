"""md5 checks and a download that fails fast when offline (cache root and probe: `jaxdl.files`).

Generic downloaders (tfds, torchvision) retry for minutes when the host cannot be
reached; on the project's offline machines that turns a missing file into a three-minute
hang. Here reachability is checked first with a short, bounded probe, so a missing data
set costs seconds and ends in one line that says which files to put where.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from ..files import cache_dir, digest, reachable  # cache_dir: re-exported for the sources that import it from here
from .dataset import DataCorrupt, DataUnavailable

READ_TIMEOUT_S = 30.0


def verify(path: Path, md5: str, hint: str) -> None:
    """Raise DataCorrupt (one line) if `path` is not the file with checksum `md5`."""
    got = digest(path, "md5")
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
