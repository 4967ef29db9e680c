"""What every jaxdl command line shares: one line on stderr for every mistake, and exit statuses scripts can use.

Exit statuses:
    0    done;
    1    the run failed on its own terms (a diverging loss, a full disk, a corrupt checkpoint with no good one);
    2    a usage mistake: a bad argument, file or data set, said in one line with how to fix it;
    130  interrupted (Ctrl-C), with the command that continues the run where it has one.

A program writes `sys.exit(cli.run(main, "prog"))`; its `main(argv)` raises `UsageError` / `RunFailed` with
one-line messages and builds its arguments with `Parser` and the checked types below, so no user mistake ever
ends in a traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path


class UsageError(Exception):
    """A mistake in what the user asked for: exit status 2."""


class RunFailed(Exception):
    """The run could not go on (diverged, disk full, ...): exit status 1."""


class Interrupted(Exception):
    """Ctrl-C, re-raised with how to continue (the message): exit status 130."""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (no usage block) raised as UsageError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(main: Callable[[list[str] | None], object], prog: str, argv: list[str] | None = None) -> int:
    """Run `main(argv)`, turning every expected failure into one line on stderr and an exit status; warnings
    print as one line `warning: ...` too (no source line), while it runs."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line
            main(argv)
        return 0
    except UsageError as e:
        status, message = 2, f"error: {e}"
    except RunFailed as e:
        status, message = 1, f"error: {e}"
    except Interrupted as e:
        status, message = 130, f"interrupted: {e}"
    except KeyboardInterrupt:
        status, message = 130, "interrupted"
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        custom = type(e).__str__ is not OSError.__str__  # e.g. CheckpointWriteError, which says what is kept
        status, message = 1, f"error: {e}" if custom else f"error: cannot write {e.filename or 'output'}: {e.strerror}"
    print(f"{prog}: {message}", file=sys.stderr)
    return status


# ------------------------------------------------------------------------------------- checked argument types


def _number(kind: Callable[[str], float], low: float, strict: bool, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return parse


positive_int = _number(int, 0, True, "a positive integer")
natural_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive number")
natural_float = _number(float, 0.0, False, "a number >= 0")


def fraction(text: str) -> float:
    """A share in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def writable_dir(path: Path, what: str = "--out") -> Path:
    """`path` as a directory this process can write into, created if needed: checked before any work is done."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a directory: name a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a name of its own: several processes may probe at once
            pass
    except OSError as e:
        raise UsageError(f"{what} {path} is not writable ({e.strerror}): choose another directory") from None
    return path
