"""One run per output directory: held under a lock for the run's lifetime, and never replaced by accident.

Two runs started at once on one directory would delete each other's checkpoints and overwrite each other's
metrics; a rerun without `--resume` would silently replace the earlier run. `claim` makes both impossible: the
second run is told, in one line, that the directory is in use, and a directory that holds a run is only
continued (`resume`) or replaced (`overwrite`) when the user says which.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK = ".lock"


class RunInUse(RuntimeError):
    """Another process holds the run directory."""


class RunExists(RuntimeError):
    """The directory holds an earlier run and the user said neither resume nor overwrite."""


def holds_run(directory: Path) -> str | None:
    """What earlier run `directory` holds, in words, or None: its checkpoints or its finished results."""
    models = sorted({p.parent.name for p in directory.glob("ckpt/*/[0-9]*")})
    if models:
        return f"checkpoints of {', '.join(models)}"
    if (directory / "metrics.json").exists():
        return "a finished run (metrics.json)"
    return None


@contextlib.contextmanager
def claim(directory: Path, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Hold `directory` for one run: lock it (refusing when another process holds it), and refuse a directory
    that holds an earlier run unless `resume` or `overwrite` (the caller then clears what it replaces).

    The lock is `flock` on DIR/.lock, released by the kernel when the process dies however it dies, so a
    killed run never leaves a stale lock behind; the file keeps the holder's pid for the message.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunInUse(f"{directory} is in use by another run (pid {holder}): wait for it to end, "
                           "or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        earlier = holds_run(directory)
        if earlier and not (resume or overwrite):
            raise RunExists(f"{directory} already holds {earlier}: continue it with --resume, replace it with "
                            "--overwrite, or choose another --out")
        yield directory
