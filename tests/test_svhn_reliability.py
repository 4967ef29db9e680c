"""Nothing lost, nothing silent, through the SVHN study's CLI: a real kill -9 resumes exactly, Ctrl-C says how to
go on, an earlier run is never replaced without --overwrite, two runs never share a directory, a resume refuses
other settings by name, a divergence can be continued at a new learning rate, and bad input is one line.

The runs are tiny (LeNet-5 on a share of scikit-learn's real 8x8 digits, upsampled to 32 px): what is tested is
the bookkeeping around the training, which is the same for every model.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.svhn.__main__ import main
from jaxdl import runtime
from jaxdl.train import rundir


ROOT = Path(__file__).resolve().parent.parent
TINY = ["--arch", "lenet5", "--data", "digits", "--fraction", "0.5", "--batch-size", "64", "--epochs", "3",
        "--no-progress"]


def run(out: Path, *extra: str) -> int:
    return main([*TINY, "--out", str(out), *extra])


def results(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["results"]["lenet5"]


def one_line(capsys, status: int, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("warning:", "note:", "lenet5: test"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("svhn: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def straight(tmp_path_factory) -> dict:
    """The uninterrupted run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("straight")
    assert run(out) == 0
    return results(out)


def study(out: Path, *extra: str, **kw) -> subprocess.Popen:
    # SIGINT at its default in the child (coreutils' env), whatever the test runner's shell did with it; the
    # child's XLA CPU kernels those of this process (whose runs it is compared with), whichever test started JAX
    same_kernels = {} if runtime.YNN_FLAG in os.environ.get("XLA_FLAGS", "") else {"JAXDL_CPU_FLAGS": "0"}
    return subprocess.Popen(["env", "--default-signal=INT", sys.executable, "-m", "experiments.svhn", *TINY,
                             "--out", str(out), *extra], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **same_kernels},
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for_checkpoint(out: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(out.glob("ckpt/lenet5/*/checksums.json")):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def test_kill_9_at_a_random_moment_then_resume_ends_as_the_uninterrupted_run(tmp_path, straight, capsys):
    out = tmp_path / "killed"
    process = study(out)
    wait_for_checkpoint(out, process)
    time.sleep(random.uniform(0.0, 1.5))  # mid-epoch, mid-save or past the last epoch: every moment must resume
    process.kill()
    process.wait()
    status = run(out, "--resume")
    assert status == 0, capsys.readouterr().err
    got = results(out)
    assert got["history"][-1]["train_loss"] == straight["history"][-1]["train_loss"]
    assert got["accuracy"] == straight["accuracy"] and got["confusion"] == straight["confusion"]


def test_ctrl_c_is_one_line_with_the_command_that_continues(tmp_path):
    out = tmp_path / "interrupted"
    process = study(out)
    wait_for_checkpoint(out, process)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("svhn:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "--resume" in lines[0] and str(out) in lines[0]


def test_a_rerun_without_resume_is_refused_and_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    saved = sorted(p.name for p in out.glob("ckpt/lenet5/*"))
    capsys.readouterr()
    assert run(out, "--epochs", "1") == 2
    one_line(capsys, 2, "already holds", "--resume", "--overwrite")
    assert sorted(p.name for p in out.glob("ckpt/lenet5/*")) == saved  # nothing deleted
    assert run(out, "--epochs", "1", "--overwrite", "--seed", "1") == 0
    assert results(out)["config"]["seed"] == 1


def test_a_second_run_on_a_directory_in_use_is_told_so(tmp_path, capsys):
    out = tmp_path / "busy"
    with rundir.claim(out):  # as a concurrent run holds it (flock conflicts between open files, even in one process)
        assert run(out) == 2
    one_line(capsys, 2, "in use by another run", f"pid {os.getpid()}")
    assert not (out / "metrics.json").exists()


def test_resume_refuses_other_data_settings_by_name(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    capsys.readouterr()
    assert main([*TINY, "--out", str(out), "--resume", "--fraction", "0.25", "--image-size", "40"]) == 2
    one_line(capsys, 2, "cannot resume", "fraction=0.5 (now 0.25)", "image_size=32 (now 40)")


def test_divergence_continues_at_a_new_learning_rate_recorded_in_the_history(tmp_path, capsys, monkeypatch):
    import numpy as np

    import jaxdl.data as jdata

    class DivergesInEpoch2(jdata.Loader):  # the loss becomes NaN in the second epoch, as a too-high lr does
        def epoch(self, epoch, start=0):
            for batch in super().epoch(epoch, start):
                yield {**batch, "image": np.full_like(batch["image"], np.nan)} if self.train and epoch == 1 else batch

    out = tmp_path / "diverged"
    monkeypatch.setattr(jdata, "Loader", DivergesInEpoch2)
    assert run(out) == 1
    one_line(capsys, 1, "loss became nan at epoch 2", "last good checkpoint: epoch 1", "--resume-with-lr")
    monkeypatch.undo()
    assert run(out, "--resume") == 0  # the same settings resume too (and would diverge again with the same lr)
    capsys.readouterr()
    out2 = tmp_path / "diverged2"
    monkeypatch.setattr(jdata, "Loader", DivergesInEpoch2)
    assert run(out2) == 1
    monkeypatch.undo()
    assert run(out2, "--resume-with-lr", "1e-3") == 0
    history = results(out2)["history"]
    assert len(history) == 3 and history[1]["changed"] == {"lr": [0.002, 0.001]} and "changed" not in history[2]
    assert results(out2)["config"]["lr"] == 1e-3
    capsys.readouterr()
    assert run(out2, "--resume") == 2  # back at the old lr: refused by name
    one_line(capsys, 2, "lr=0.001 (now 0.002)")


@pytest.mark.parametrize("argv, expected", [
    (["--fraction", "1e-9"], "leaves 0 training images"),
    (["--batch-size", "5000"], "fewer than one batch of 5000"),
    (["--image-size", "1"], "too small for lenet5: it needs at least 16 px"),
    (["--image-size", "-5"], "argument --image-size: -5 is not a positive integer"),
    (["--image-size", "0"], "argument --image-size: 0 is not a positive integer"),
    (["--seed", "-1"], "argument --seed: -1 is not an integer >= 0"),
    (["--weight-decay", "-1"], "argument --weight-decay: -1 is not a number >= 0"),
    (["--lr", "nan"], "argument --lr: nan is not a positive number"),
    (["--resume", "--overwrite"], "choose one"),
    (["--arch", "resnet18", "--image-size", "5000"], "needs about"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, argv, expected):
    assert main([*TINY, "--out", str(tmp_path / "out"), *argv]) == 2
    one_line(capsys, 2, expected)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_unwritable_and_file_paths_are_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main([*TINY, "--out", str(a_file)]) == 2
    one_line(capsys, 2, "is a file, not a directory")
    assert main([*TINY, "--out", str(tmp_path / "o"), "--data-dir", str(a_file)]) == 2
    one_line(capsys, 2, "--data-dir", "is a file")
    if os.geteuid() != 0:  # root writes anywhere: the permission case only exists for other users
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        assert main([*TINY, "--out", str(locked / "x")]) == 2
        one_line(capsys, 2, "not writable")


def test_weights_without_arch_metadata_are_one_line(tmp_path, capsys):
    from safetensors.numpy import save_file
    import numpy as np

    bad = tmp_path / "w.safetensors"
    save_file({"fc3.kernel": np.zeros((84, 10), np.float32)}, str(bad), metadata={"format": "jaxdl-nhwc-v1"})
    assert main([*TINY, "--out", str(tmp_path / "o"), "--weights", str(bad)]) == 2
    one_line(capsys, 2, "--weights", "arch")
