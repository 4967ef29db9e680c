"""Suite-wide helpers (no settings: the suite runs the configuration users get)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[None]:
    with open(file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def computed_once(tmp_path_factory) -> Callable[[str, Callable[[Path], None]], Path]:
    """`computed_once(name, compute)`: the directory `compute(dir)` filled, computed by the first pytest-xdist
    worker of this session that asks and reused by the others (a study run is too slow to repeat per worker)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's, never an older one's

    def get(name: str, compute: Callable[[Path], None]) -> Path:
        out = shared / f"once-{name}"
        with _locked(shared / f"once-{name}.lock"):
            if not (out / ".done").exists():
                out.mkdir(parents=True, exist_ok=True)
                compute(out)
                (out / ".done").touch()
        return out

    return get
