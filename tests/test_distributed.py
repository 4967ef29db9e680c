"""Many processes, the JAX way: two CPU processes on localhost (gloo collectives) train as one.

`python -m experiments.finetune` with --coordinator/--num-processes/--process-id: each process builds only its
rows of every global batch, process 0 alone writes the reports, checkpoints are saved and restored by both.
The run must match a single-process run with the same global batch (the first epoch's loss within 1e-5
relative, later epochs within float reduction-order drift), and a 2-process run killed after its first
checkpoint must resume to the uninterrupted 2-process run's numbers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.finetune.__main__ import main
from jaxdl.train import parallel
from jaxdl.train.checkpoint import RECORD

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--data", "digits", "--arch", "mlp", "--weights", "none", "--epochs", "3", "--batch-size", "32",
       "--optimizer", "sgd", "--lr", "0.05", "--schedule", "constant", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(out: Path, *extra: str, processes: int = 2) -> list[subprocess.Popen]:
    """The finetune CLI as `processes` processes, each with one CPU device."""
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    base = [sys.executable, "-m", "experiments.finetune", *RUN, "--out", str(out), *extra]
    port = free_port()
    return [subprocess.Popen([*base, "--coordinator", f"localhost:{port}", "--num-processes", str(processes),
                              "--process-id", str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(processes)]


def finish(procs: list[subprocess.Popen]) -> None:
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]


def result(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["results"]["mlp"]


def numbers(r: dict) -> list[tuple]:
    return [(h["train_loss"], h["train_accuracy"], h["val_loss"], h["val_accuracy"]) for h in r["history"]]


def test_two_processes_train_as_one_and_resume_exactly(tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    runs = start(two)
    assert main([*RUN, "--out", str(one)]) == 0  # the single-process reference, here while the two run
    finish(runs)
    single, double = result(one), result(two)
    assert double["history"][0]["train_loss"] == pytest.approx(single["history"][0]["train_loss"], rel=1e-5)
    for a, b in zip(numbers(single), numbers(double)):
        assert a == pytest.approx(b, rel=1e-4)
    assert double["accuracy"] == pytest.approx(single["accuracy"], abs=1.5 / 180)  # at most one test image
    # process 0 alone wrote the reports: one log, one report, one best model
    assert {p.name for p in (two / "mlp").iterdir()} <= {"best.safetensors", "log.csv", "tensorboard"}
    assert len(list((two / "mlp").glob("tensorboard/*"))) <= 1  # one event file, when a writer is installed

    killed = tmp_path / "killed"
    procs = start(killed)
    record = killed / "ckpt" / "mlp" / "0" / RECORD
    deadline = time.monotonic() + 180
    while not record.exists() and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert record.exists() and not (killed / "metrics.json").exists(), "the kill came too late to test a resume"
    finish(start(killed, "--resume"))
    resumed = result(killed)
    assert numbers(resumed) == numbers(double) and resumed["accuracy"] == double["accuracy"]


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "localhost:1234"], "missing --num-processes, --process-id"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "must be HOST:PORT"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"], "process id 2 is not one of 0..1"),
])
def test_incomplete_or_inconsistent_flags_are_one_line(flags, message, tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path), *flags]) == 2  # refused before JAX starts
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_environment_and_cluster_detection_decide_when_nothing_is_given(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    with pytest.raises(parallel.DistributedConfigError, match="missing JAX_NUM_PROCESSES, JAX_PROCESS_ID"):
        parallel.initialize_distributed()
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    assert parallel.detected_cluster() is None  # this machine is no cluster: the run stays one process
    for name, value in {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
                        "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    assert parallel.detected_cluster() == "SlurmCluster"  # JAX's own detection, as srun with 2 tasks sets it up
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert parallel.detected_cluster() is None  # a one-task job needs no coordinator
