"""Checkpoints against damaged files and full disks: never resume silently from damage, never lose the last good one.

Every test works on a tiny model's carried state (parameters, BatchNorm statistics, a dropout PRNG key, Adam's
moments and step count) so that it runs in seconds; epoch e's state is the initial one plus e, so restoring
the wrong epoch cannot pass for the right one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdl.train import CheckpointCorrupt, CheckpointMismatch, Checkpoints, CheckpointWarning, CheckpointWriteError
from jaxdl.train.checkpoint import RECORD
from jaxdl.train.step import split

ROOT = Path(__file__).resolve().parents[1]


class Tiny(nnx.Module):
    def __init__(self, width: int = 64, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.fc = nnx.Linear(64, width, rngs=rngs)  # 16 KB of incompressible floats: the largest data file
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)


def state_at(epoch: int, width: int = 64, tx: optax.GradientTransformation | None = None):
    _, state = split(Tiny(width), tx or optax.adam(1e-3))
    return jax.tree.map(lambda x: x + epoch if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


def flat(state) -> list[np.ndarray]:
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree.leaves(state)]


def assert_same(a, b) -> None:
    """Bit for bit, dtypes and PRNG key types included."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
    for x, y in zip(flat(a), flat(b)):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def saved(directory: Path, epochs: int = 3) -> Checkpoints:
    """Checkpoints of epochs 0..epochs-1 (keep=2 leaves the last two)."""
    ckpt = Checkpoints(directory)
    for e in range(epochs):
        ckpt.save(e, state_at(e), {"history": list(range(e + 1))})
    return ckpt


def restore_warned(ckpt: Checkpoints, template=None, epoch=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ckpt.restore(state_at(0) if template is None else template, epoch)
    return result, [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]


def largest(step: Path) -> Path:
    return max((p for p in step.rglob("*") if p.is_file() and p.name != RECORD), key=lambda p: p.stat().st_size)


def flip(file: Path, n: int = 64) -> None:
    data = bytearray(file.read_bytes())
    start = max(len(data) // 2 - n // 2, 0)
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))


def damage(step: Path, how: str) -> str:
    """Damage one checkpoint; returns what the warning must say."""
    file = largest(step)
    rel = file.relative_to(step).as_posix()
    if how == "flip":
        flip(file)
        return f"{rel} fails its sha256 check"
    if how == "truncate":
        size = file.stat().st_size
        with open(file, "r+b") as f:
            f.truncate(size // 2)
        return f"{rel} has {size // 2} bytes, {size} were written"
    if how == "delete":
        file.unlink()
        return f"{rel} is missing"
    if how == "no_record":  # killed after Orbax finished, before the record was written
        (step / RECORD).unlink()
        return f"has no {RECORD}"
    if how == "bad_record":
        (step / RECORD).write_text('{"format": 1, "files": {')
        return f"its {RECORD} is unreadable"
    if how == "state_dir_gone":
        shutil.rmtree(step / "state")
        return "is missing"
    raise ValueError(how)


DAMAGES = ["flip", "truncate", "delete", "no_record", "bad_record", "state_dir_gone"]


def test_save_restore_is_exact_keeps_two_and_records_checksums(tmp_path: Path):
    ckpt = saved(tmp_path)
    assert ckpt.epochs() == [1, 2] and ckpt.latest_epoch() == 2
    record = json.loads((tmp_path / "2" / RECORD).read_text())
    assert len(record["arrays"]) == len(flat(state_at(0))) and "meta/metadata" in record["files"]
    (state, meta), warned = restore_warned(ckpt)
    assert warned == [] and meta["history"] == [0, 1, 2]
    assert_same(state, state_at(2))
    (state, meta), _ = restore_warned(ckpt, epoch=1)
    assert_same(state, state_at(1))
    (state, _), warned = restore_warned(ckpt)  # restoring changed no file that the record covers
    assert warned == []
    ckpt.close()


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_newest_falls_back_to_previous_with_one_warning(tmp_path: Path, how: str):
    ckpt = saved(tmp_path)
    reason = damage(tmp_path / "2", how)
    (state, meta), warned = restore_warned(ckpt)
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert str(tmp_path / "2") in warned[0] and "(epoch 3)" in warned[0] and reason in warned[0], warned[0]
    assert meta["history"] == [0, 1]
    assert_same(state, state_at(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ckpt.meta()["history"] == [0, 1]  # the newest readable meta, without a warning (restoring warns)
        assert caught == []
        state, meta, epoch = ckpt.restore_latest_good(state_at(0))
    assert epoch == 1 and len(caught) == 1


def test_array_digests_catch_damage_the_file_record_missed(tmp_path: Path):
    """Flipped bytes whose file entry was rewritten to match: only the arrays' own digests (or Orbax) can tell."""
    ckpt = saved(tmp_path)
    step = tmp_path / "2"
    file = largest(step)
    flip(file)
    record = json.loads((step / RECORD).read_text())
    record["files"] = {rel: [(step / rel).stat().st_size, hashlib.sha256((step / rel).read_bytes()).hexdigest()]
                       for rel in record["files"]}
    (step / RECORD).write_text(json.dumps(record))
    (state, _), warned = restore_warned(ckpt)
    assert len(warned) == 1, warned
    assert "does not match its sha256" in warned[0] or "Orbax cannot read it" in warned[0], warned
    assert_same(state, state_at(1))


def test_all_damaged_raises_one_line(tmp_path: Path):
    ckpt = saved(tmp_path)
    damage(tmp_path / "2", "flip")
    damage(tmp_path / "1", "truncate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointCorrupt) as info:
            ckpt.restore(state_at(0))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "--overwrite" in message and "epochs 3, 2" in message
    assert len([w for w in caught if issubclass(w.category, CheckpointWarning)]) == 2
    with pytest.raises(CheckpointCorrupt) as info:  # asking for one epoch: that one or nothing
        ckpt.restore(state_at(0), epoch=2)
    assert "\n" not in str(info.value) and "fails its sha256 check" in str(info.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointCorrupt):
            ckpt.meta()
    assert len([w for w in caught if issubclass(w.category, CheckpointWarning)]) == 2
    with pytest.raises(CheckpointCorrupt):
        ckpt.meta(1)


@pytest.mark.parametrize("template", [
    pytest.param(lambda: state_at(0, width=32), id="other-shape"),
    pytest.param(lambda: state_at(0, tx=optax.sgd(0.1, momentum=0.9)), id="other-optimizer"),
    pytest.param(lambda: jax.tree.map(lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                      state_at(0)), id="other-dtype"),
])
def test_other_model_is_a_one_line_mismatch_without_fallback(tmp_path: Path, template):
    ckpt = saved(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointMismatch) as info:
            ckpt.restore(template())
    message = str(info.value)
    assert "\n" not in message and "different model or optimizer" in message and str(tmp_path / "2") in message
    assert "Traceback" not in message and "orbax" not in message.lower() and len(message) < 400
    assert [w for w in caught if issubclass(w.category, CheckpointWarning)] == []  # the older ones are the same run


def failing_write(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    """Make `target.name` fail as a full disk does."""
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]) if args else None)

    monkeypatch.setattr(target, name, fail)


@pytest.mark.parametrize("where", ["orbax", "record"])
def test_write_failure_is_one_line_and_keeps_the_previous_checkpoints(tmp_path: Path, where: str):
    """ENOSPC while Orbax writes (its JSON item), or after Orbax finished, while the record is made durable:
    one line, the partial checkpoint removed, the older ones all still there (no max_to_keep deletion)."""
    ckpt = saved(tmp_path, epochs=2)
    from etils import epath

    with pytest.MonkeyPatch.context() as m:
        if where == "orbax":
            failing_write(m, type(epath.Path(tmp_path)), "write_text")
        else:
            failing_write(m, os, "fsync")
        with pytest.raises(CheckpointWriteError) as info:
            ckpt.save(2, state_at(2), {"history": [0, 1, 2]})
    error = info.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == str(tmp_path / "2")
    assert "\n" not in str(error) and "No space left on device" in str(error) and "(epoch 2) is kept" in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]
    (state, meta), warned = restore_warned(ckpt)
    assert warned == [] and meta["history"] == [0, 1]
    assert_same(state, state_at(1))
    ckpt.save(2, state_at(2), {"history": [0, 1, 2]})  # space freed: the run goes on
    assert ckpt.epochs() == [1, 2]
    assert_same(restore_warned(ckpt)[0][0], state_at(2))


def test_orbax_tmp_leftovers_are_not_checkpoints(tmp_path: Path):
    ckpt = saved(tmp_path, epochs=2)
    for name in ("2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1712345678"):
        shutil.copytree(tmp_path / "1", tmp_path / name)
    (tmp_path / "2.orbax-checkpoint-tmp" / RECORD).unlink()
    ckpt = Checkpoints(tmp_path)  # a new process resuming
    assert ckpt.epochs() == [0, 1] and ckpt.latest_epoch() == 1
    (state, meta), warned = restore_warned(ckpt)
    assert warned == [] and meta["history"] == [0, 1]
    assert_same(state, state_at(1))
    ckpt.save(2, state_at(2), {"history": [0, 1, 2]})  # the leftovers of 2 and later are cleared on the way
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]
    ckpt.clear()
    assert list(tmp_path.iterdir()) == [] and ckpt.latest_epoch() is None


def test_a_skipped_damaged_epoch_is_saved_again(tmp_path: Path):
    """Resumed from epoch 2 past a damaged epoch 3, the run saves epoch 3 anew (Orbax alone would skip a step
    that is not newer than its latest, silently)."""
    ckpt = saved(tmp_path)
    damage(tmp_path / "2", "flip")
    restore_warned(ckpt)
    ckpt.save(2, state_at(5), {"history": [0, 1, 5]})
    (state, meta), warned = restore_warned(Checkpoints(tmp_path))
    assert warned == [] and meta["history"] == [0, 1, 5]
    assert_same(state, state_at(5))


def test_orbax_logging_stays_off_the_console(tmp_path: Path):
    """Nothing reaches absl's handlers from our calls (Orbax logs each save and restore), and the logger's
    configuration is left as it was."""
    logger = logging.getLogger("absl")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    level, filters = logger.level, list(logger.filters)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        ckpt = saved(tmp_path)
        damage(tmp_path / "2", "delete")
        restore_warned(ckpt)
        ckpt.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert records == [], [r.getMessage()[:200] for r in records[:3]]
    assert logger.filters == filters


FULL_DISK = textwrap.dedent("""
    import json, sys, warnings
    import jax, numpy as np, optax
    from flax import nnx
    sys.path.insert(0, sys.argv[2])
    from tests.test_checkpoint import Tiny, assert_same, state_at
    from jaxdl.train import Checkpoints, CheckpointWriteError
    from jaxdl.train.step import split

    ckpt = Checkpoints(sys.argv[1])
    ckpt.save(0, state_at(0), {"history": [0]})
    _, big = split(Tiny(width=32768), optax.adam(1e-3))  # 8 MB of incompressible weights for a 2 MB disk
    try:
        ckpt.save(1, big, {"history": [0, 1]})
        out = {"raised": None}
    except CheckpointWriteError as e:
        out = {"raised": str(e), "errno": e.errno}
    out["left"] = sorted(p.name for p in ckpt.directory.iterdir())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, meta = ckpt.restore(state_at(0))
    assert_same(state, state_at(0))
    out["history"], out["warnings"] = meta["history"], [str(w.message) for w in caught]
    ckpt.close()
    print(json.dumps(out))
""")


def test_full_tmpfs_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    """A real full disk (a 2 MB tmpfs in a private mount namespace; skipped where it cannot be mounted):
    the save fails in tensorstore's C++ writer, not in Python."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a private tmpfs")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=2m tmpfs {mount}"],
                           capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()[:200]}")
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(["unshare", "-rm", "sh", "-c",
                          f'mount -t tmpfs -o size=2m tmpfs {mount} && exec "$0" "$@"',
                          sys.executable, str(script), str(mount / "ckpt"), str(ROOT)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["errno"] == errno.ENOSPC and "\n" not in out["raised"], out
    assert str(mount / "ckpt" / "1") in out["raised"] and "(epoch 1) is kept" in out["raised"]
    assert out["left"] == ["0"] and out["history"] == [0] and out["warnings"] == []
    assert "Traceback" not in run.stderr and "absl" not in run.stderr, run.stderr[-3000:]


def test_trainer_resumes_past_a_damaged_checkpoint_to_the_uninterrupted_result(tmp_path: Path):
    """The measured failure, end to end: flipped bytes in the newest checkpoint used to resume silently to a
    loss of 1e29; now the run warns, redoes that epoch from the previous checkpoint and ends bit-identical."""
    from jaxdl.data import Dataset, Loader
    from jaxdl.train import TrainConfig, Trainer

    config = TrainConfig(epochs=3, batch_size=16, optimizer="sgd", lr=0.1, schedule="onecycle", seed=0)
    rng = np.random.default_rng(0)
    labels = (np.arange(64) % 10).astype(np.int32)
    images = rng.integers(0, 255, (64, 8, 8, 3)).astype(np.uint8)
    data = Loader(Dataset(images, labels, "tiny", real=False), config.batch_size, train=True,
                  mean=(0.5,) * 3, std=(0.25,) * 3, seed=config.seed)

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.fc = nnx.Linear(8 * 8 * 3, 10, rngs=rngs)
            self.bn = nnx.BatchNorm(10, rngs=rngs)
            self.drop = nnx.Dropout(0.2, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.bn(self.fc(x.reshape(x.shape[0], -1))))

    def trainer() -> Trainer:
        return Trainer(Net(nnx.Rngs(0)), config, len(data), progress=False)

    straight = trainer()
    history = straight.fit(data, Checkpoints(tmp_path / "a"))
    ckpt = Checkpoints(tmp_path / "b")
    trainer().fit(data, ckpt)
    flip(largest(tmp_path / "b" / "2"))
    resumed = trainer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed_history = resumed.fit(data, Checkpoints(tmp_path / "b"), resume=True)
    assert [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)][0].count("damaged") == 1
    assert len([w for w in caught if issubclass(w.category, CheckpointWarning)]) == 1
    assert [h["train_loss"] for h in resumed_history] == [h["train_loss"] for h in history]
    assert_same(resumed.state, straight.state)
