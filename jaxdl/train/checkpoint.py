"""Per-epoch Orbax checkpoints of the carried train state, for `--resume`, that never resume from damage silently.

`directory/<epoch>/` (0-based) holds two Orbax items, `state` (the flat list of leaves, PRNG keys as raw key
data, which Orbax can store) and `meta` (JSON: the history so far plus every leaf's path, shape and dtype), and,
written LAST, `checksums.json`: the size and sha256 of every file Orbax wrote and the sha256 of every array as
it was in memory. That record is the commit mark: a checkpoint without one never finished saving.

Restoring checks, in order: the record, every file against it (a missing or truncated file is named in one
line before Orbax ever reads it), the structure recorded in the meta against the template (another model or
optimizer is `CheckpointMismatch`, never an Orbax shape error), then the restored arrays against their
digests (so flipped bytes cannot come back as numbers, whatever Orbax's format does with them). A damaged
newest checkpoint is skipped with one warning for the next newest intact one.

Retention is done here, not by Orbax's `max_to_keep`: older checkpoints are deleted only once the new one is
complete and recorded, so a failed save (a full disk) always leaves the previous good one in place.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

_T = TypeVar("_T")
RECORD = "checksums.json"
FORMAT = 1
_TMP = ".orbax-checkpoint-tmp"  # Orbax's name for a save in progress (or killed): `<epoch>.orbax-checkpoint-tmp*`
_AFRESH = "--overwrite or another --out starts afresh"


class CheckpointMismatch(ValueError):
    """The checkpoint was written for a different model or optimizer than the one resuming."""


class CheckpointCorrupt(RuntimeError):
    """No intact checkpoint is left to resume from (each one was damaged, incomplete or unreadable)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota, permissions); the previous good one is kept.

    An OSError with errno, strerror and filename (the checkpoint's directory) set, so a CLI that reports
    OSErrors by errno reports this one too.
    """

    kept = "the previous checkpoint, if any, is kept"

    def __str__(self) -> str:
        return f"cannot write checkpoint {self.filename}: {self.strerror} [errno {self.errno}]; {self.kept}"


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older one."""


class _Damaged(Exception):
    """Why one checkpoint cannot be trusted (internal: restore turns it into a warning or CheckpointCorrupt)."""


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _orbax() -> Any:
    """orbax.checkpoint, imported on first use: it costs 0.7 s that `import jaxdl.train` need not pay. Its
    import logs its handler registrations through absl: muted like the rest of Orbax's logging."""
    with _quiet():
        import orbax.checkpoint

    return orbax.checkpoint


class _Mute(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute the absl logger, through which Orbax reports every step and every failure (with a traceback, from
    each of its threads), for the duration of one of our calls only: we raise or warn in one line instead.
    A filter of our own, added and removed, leaves the logging configuration as it was."""
    logger, mute = logging.getLogger("absl"), _Mute()
    logger.addFilter(mute)
    try:
        yield
    finally:
        logger.removeFilter(mute)


def _first_line(e: BaseException, limit: int = 200) -> str:
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _os_error(e: BaseException) -> tuple[int, str] | None:
    """(errno, strerror) when `e` (or what caused it) is an operating-system error: Python's OSError, or the
    ValueError tensorstore raises with `[os_error_code='28']` in its message."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return e.errno, e.strerror or os.strerror(e.errno)
        code = re.search(r"os_error_code='?(\d+)", str(e))
        if code:
            return int(code.group(1)), os.strerror(int(code.group(1)))
        if "No space left on device" in str(e):
            return errnos.ENOSPC, os.strerror(errnos.ENOSPC)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return None


def _stored(x: Any) -> Any:
    """A leaf as Orbax stores it: PRNG keys as their raw key data."""
    return jax.random.key_data(x) if _is_key(x) else x


def _host(x: Any) -> np.ndarray:
    """The whole array on this host, also when it spans other processes' devices (the state is replicated)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _digest(x: Any) -> str:
    """sha256 of an array's dtype, shape and bytes: what must come back, bit for bit."""
    a = np.ascontiguousarray(_host(x))
    h = hashlib.sha256(f"{a.dtype.name}{a.shape}".encode())
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _structure(state: Any) -> dict[str, list]:
    """Every stored leaf's path, shape and dtype, recorded in the meta so that a checkpoint of another model or
    optimizer is told apart before Orbax is asked to restore it."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    stored = [_stored(x) for _, x in flat]
    return {"paths": [jax.tree_util.keystr(p) for p, _ in flat],
            "shapes": [list(np.shape(x)) for x in stored],
            "dtypes": [np.dtype(x.dtype).name for x in stored]}


class Checkpoints:
    """Epoch-numbered checkpoints under `directory`; the newest `keep` are kept.

    `save(epoch, state, meta)` after each epoch; `restore(template)` (or `restore_latest_good`) on resume;
    `clear()` before a fresh run.
    """

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory, self.keep = Path(directory).absolute(), keep
        ocp = _orbax()
        # synchronous (a save that returns is complete, and its errors are raised here, not in a thread) and
        # no max_to_keep: deleting the old checkpoints waits for the new one's record (see _retain)
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False)
        with _quiet():
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    # ------------------------------------------------------------------------------------------------ listing

    def _path(self, epoch: int) -> Path:
        return self.directory / str(epoch)

    def _entries(self) -> dict[int, list[Path]]:
        """Every path of the directory that belongs to an epoch: its checkpoint and Orbax's leftovers of a
        killed save (`<epoch>.orbax-checkpoint-tmp*`), which are never taken for checkpoints."""
        entries: dict[int, list[Path]] = {}
        if not self.directory.is_dir():
            return entries
        for path in self.directory.iterdir():
            head = path.name.split(".", 1)[0]
            if head.isdigit() and (path.name == head or path.name.startswith(head + _TMP)):
                entries.setdefault(int(head), []).append(path)
        return entries

    def epochs(self) -> list[int]:
        """The epochs (0-based) that have a checkpoint directory, oldest first: complete or not, intact or not
        (`restore` checks)."""
        return sorted(e for e, paths in self._entries().items() if self._path(e) in paths and self._path(e).is_dir())

    def latest_epoch(self) -> int | None:
        """The last epoch (0-based) that has a checkpoint, or None. Whether it is intact is for `restore` to
        find out: a damaged one must not look like no checkpoint at all, which would start the run afresh."""
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    # ------------------------------------------------------------------------------------------------- saving

    def save(self, epoch: int, state: Any, meta: dict) -> None:
        """Save synchronously: when this returns, the epoch is on disk with its checksums and a kill cannot lose it.

        Checkpoints of `epoch` and later are discarded first (the run went back to `epoch`: they are the damaged
        ones a resume skipped, or Orbax's leftovers of a killed save). Any operating-system error while writing
        raises CheckpointWriteError after removing the partial checkpoint; the older ones are untouched.
        """
        leaves = [_stored(x) for x in jax.tree.leaves(state)]
        meta = {**meta, **_structure(state)}
        digests = [_digest(x) for x in leaves]  # of the state in memory: the record vouches for it, not for the disk
        path = self._path(epoch)
        ocp = _orbax()
        try:
            for stale in sorted(e for e in self._entries() if e >= epoch):
                self._discard(stale)
            self._check_space(sum(np.asarray(x).nbytes for x in leaves) + len(json.dumps(meta)))
            with _quiet():
                saved = self.manager.save(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)))
                self.manager.wait_until_finished()
            if not saved:
                raise RuntimeError(f"Orbax declined to save epoch {epoch} in {self.directory}")
            self._write_record(path, digests)
        except Exception as e:
            error = _os_error(e)
            with contextlib.suppress(Exception):
                self._discard(epoch)
            if error is None:
                raise
            failure = CheckpointWriteError(error[0], error[1], str(path))
            previous = [p for p in self.epochs() if p < epoch]
            failure.kept = (f"the previous checkpoint (epoch {previous[-1] + 1}) is kept" if previous
                            else "no earlier checkpoint exists")
            raise failure from None
        self._retain()

    def _check_space(self, needed: int) -> None:
        """Refuse a save the disk cannot hold before Orbax starts one: a write that fails midway leaves its
        other writes' callbacks to a closed event loop, each printing a traceback as the process exits."""
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise OSError(errnos.ENOSPC, f"No space left on device ({needed / 1e6:.1f} MB needed, "
                                         f"{free / 1e6:.1f} MB free)")

    def _write_record(self, path: Path, digests: list[str]) -> None:
        """Write the checksum record last, atomically (temporary file, fsync, rename): it exists only complete."""
        if jax.process_index() != 0:
            return
        files = {}
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path).as_posix()
            files[rel] = [file.stat().st_size, _file_digest(file)]
        record = {"format": FORMAT, "files": files, "arrays": digests}
        part = path / (RECORD + ".part")
        with open(part, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path / RECORD)

    def _retain(self) -> None:
        """Delete what is older than the newest `keep` checkpoints (called only after a complete save)."""
        kept = self.epochs()[-self.keep:]
        for epoch in sorted(self._entries()):
            if kept and epoch < kept[0]:
                self._discard(epoch)

    def _discard(self, epoch: int) -> None:
        """Delete one epoch's checkpoint and Orbax's leftovers of it."""
        with _quiet():
            self.manager.reload()
            if epoch in self.manager.all_steps():
                self.manager.delete(epoch)
            if jax.process_index() == 0:
                for path in self._entries().get(epoch, []):
                    shutil.rmtree(path, ignore_errors=True)
            self.manager.reload()

    def clear(self) -> None:
        """Delete every checkpoint and leftover, for a run that starts afresh."""
        for epoch in sorted(self._entries()):
            self._discard(epoch)

    # ----------------------------------------------------------------------------------------------- restoring

    def restore(self, template: Any, epoch: int | None = None) -> tuple[Any, dict]:
        """(state, meta) of `epoch`, with `template`'s structure, dtypes and shardings; by default of the newest
        intact checkpoint (see `restore_latest_good`). A damaged `epoch` raises CheckpointCorrupt."""
        if epoch is None:
            state, meta, _ = self.restore_latest_good(template)
            return state, meta
        return self._one(epoch, lambda e: self._load(template, e))

    def restore_latest_good(self, template: Any) -> tuple[Any, dict, int]:
        """(state, meta, epoch) of the newest intact checkpoint.

        Each damaged one on the way (checksum mismatch, missing or truncated file, unreadable record or meta,
        Orbax error) is skipped with one CheckpointWarning naming it and why. None intact: CheckpointCorrupt.
        A checkpoint of another model or optimizer raises CheckpointMismatch at once: older ones are of the same run.
        """
        (state, meta), epoch = self._newest(lambda e: self._load(template, e), warn=True)
        return state, meta, epoch

    def meta(self, epoch: int | None = None) -> dict:
        """The meta (history, config, what the caller saved) of `epoch` or, by default, of the newest checkpoint
        whose files are intact, without reading its arrays: to check that a resume continues the same run
        before restoring anything. Damaged checkpoints are skipped without a warning here (restoring warns
        about them); none intact: one warning each, then CheckpointCorrupt."""
        if epoch is not None:
            return self._one(epoch, lambda e: self._read_meta(e)[1])
        return self._newest(lambda e: self._read_meta(e)[1], warn=False)[0]

    def _one(self, epoch: int, load: Callable[[int], _T]) -> _T:
        if epoch not in self.epochs():
            raise FileNotFoundError(f"no checkpoint of epoch {epoch + 1} in {self.directory}")
        try:
            return load(epoch)
        except _Damaged as e:
            raise CheckpointCorrupt(f"checkpoint {self._path(epoch)} (epoch {epoch + 1}) is damaged: {e}; "
                                    f"{_AFRESH}") from None

    def _newest(self, load: Callable[[int], _T], warn: bool) -> tuple[_T, int]:
        """`load` of the newest epoch it does not find damaged, warning (if `warn`) of each damaged one skipped."""
        epochs = self.epochs()
        if not epochs:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        damaged = []
        for epoch in reversed(epochs):
            try:
                return load(epoch), epoch
            except _Damaged as e:
                damaged.append((epoch, e))
                if warn:
                    self._warn(epoch, e, last=epoch == epochs[0])
        if not warn:
            for epoch, e in damaged:
                self._warn(epoch, e, last=epoch == epochs[0])
        listed = ", ".join(str(e + 1) for e in reversed(epochs))
        raise CheckpointCorrupt(f"no intact checkpoint in {self.directory} (epochs {listed} are all damaged); "
                                f"{_AFRESH}")

    def _warn(self, epoch: int, why: _Damaged, last: bool) -> None:
        then = "no older one is left" if last else "trying the previous one"
        warnings.warn(f"checkpoint {self._path(epoch)} (epoch {epoch + 1}) is damaged: {why}; {then}",
                      CheckpointWarning, stacklevel=4)

    def _check_files(self, path: Path) -> dict:
        """The checksum record, after checking every file it lists (cheaper and clearer than Orbax's errors)."""
        try:
            record = json.loads((path / RECORD).read_text())
        except FileNotFoundError:
            raise _Damaged(f"it has no {RECORD} (its save did not finish, or an older jaxdl wrote it)") from None
        except (OSError, ValueError) as e:
            raise _Damaged(f"its {RECORD} is unreadable ({_first_line(e)})") from None
        if (not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("files"), dict)
                or not isinstance(record.get("arrays"), list)):
            raise _Damaged(f"its {RECORD} is not a jaxdl checksum record of format {FORMAT}")
        for rel, entry in record["files"].items():
            try:
                size, digest = entry
                actual = (path / rel).stat().st_size
            except FileNotFoundError:
                raise _Damaged(f"{rel} is missing") from None
            except (OSError, TypeError, ValueError) as e:
                raise _Damaged(f"{rel} cannot be checked ({_first_line(e)})") from None
            if actual != size:
                raise _Damaged(f"{rel} has {actual} bytes, {size} were written")
            try:
                same = _file_digest(path / rel) == digest
            except OSError as e:
                raise _Damaged(f"{rel} cannot be read ({_first_line(e)})") from None
            if not same:
                raise _Damaged(f"{rel} fails its sha256 check")
        return record

    def _check_structure(self, meta: Any, template: Any, epoch: int) -> None:
        if not isinstance(meta, dict) or any(not isinstance(meta.get(k), list) for k in ("paths", "shapes", "dtypes")):
            raise _Damaged("its meta lacks the paths, shapes and dtypes of the state")
        saved, here = meta, _structure(template)
        where = f"checkpoint {self._path(epoch)} holds a different model or optimizer state"
        if saved["paths"] != here["paths"]:
            first = next((f"{a} saved, {b} here" for a, b in zip(saved["paths"], here["paths"]) if a != b),
                         "one has more")
            raise CheckpointMismatch(f"{where} ({len(saved['paths'])} arrays vs {len(here['paths'])}; "
                                     f"first difference: {first}); {_AFRESH}")
        for p, s, d, s2, d2 in zip(here["paths"], saved["shapes"], saved["dtypes"], here["shapes"], here["dtypes"]):
            if s != s2 or d != d2:
                raise CheckpointMismatch(f"{where} ({p} is {d}{s} there, {d2}{s2} here); {_AFRESH}")

    def _read_meta(self, epoch: int) -> tuple[dict, dict]:
        """(checksum record, meta) of one checkpoint whose files all pass their checks; _Damaged otherwise."""
        record = self._check_files(self._path(epoch))
        ocp = _orbax()
        try:
            with _quiet():
                meta = self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:
            raise _Damaged(f"its meta cannot be read ({_first_line(e)})") from None
        if not isinstance(meta, dict):
            raise _Damaged("its meta is not a JSON object")
        return record, meta

    def _load(self, template: Any, epoch: int) -> tuple[Any, dict]:
        """One checkpoint, every check passed; _Damaged (with the reason) or CheckpointMismatch otherwise."""
        record, meta = self._read_meta(epoch)
        ocp = _orbax()
        self._check_structure(meta, template, epoch)
        leaves, treedef = jax.tree.flatten(template)
        if len(record["arrays"]) != len(leaves):
            raise _Damaged(f"its {RECORD} lists {len(record['arrays'])} arrays, the meta {len(leaves)}")
        targets = [jax.ShapeDtypeStruct(np.shape(jax.random.key_data(x)) if _is_key(x) else x.shape,
                                        jax.random.key_data(x).dtype if _is_key(x) else x.dtype,
                                        sharding=x.sharding) for x in leaves]
        try:
            with _quiet():
                args = ocp.args.Composite(state=ocp.args.StandardRestore(targets))
                stored = self.manager.restore(epoch, args=args)["state"]
        except Exception as e:
            raise _Damaged(f"Orbax cannot read it ({_first_line(e)})") from None
        for name, array, digest in zip(meta["paths"], stored, record["arrays"]):
            if _digest(array) != digest:
                raise _Damaged(f"{name} does not match its sha256 (the data changed after it was saved)")
        restored = [jax.random.wrap_key_data(s, impl=jax.random.key_impl(t)) if _is_key(t) else s
                    for s, t in zip(stored, leaves)]
        return jax.tree.unflatten(treedef, restored), meta

    def close(self) -> None:
        with _quiet():
            self.manager.close()
